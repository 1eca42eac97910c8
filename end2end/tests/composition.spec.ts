import { test, expect, watch, expectLive } from '../support/fixtures';

test('three bundles hydrate the server-rendered page, each with its own WebSocket', async ({ page, request }) => {
  const html = await (await request.get('/')).text();
  expect(html).toContain('Walnut Desk Lamp');
  expect(html).toContain('€129.00');

  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);
  expect(new Set(watched.wasm).size).toBe(3);
  expect(watched.sockets.map((s) => new URL(s.url()).pathname)).toEqual(['/ws', '/ws', '/ws']);
  expect(watched.errors).toEqual([]);
});

test('adding a product updates the cart and the badge without a reload', async ({ page }, testInfo) => {
  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);
  const card = page.locator('.product-card[data-product-id="ceramic-pour-over"]');
  await card.getByRole('button', { name: 'Add to cart' }).click();
  await expect(page.locator('.cart-count')).toHaveText('1');
  await expect(page.locator('.cart-line[data-product-id="ceramic-pour-over"] .line-quantity')).toHaveValue('1');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€34.00');
  await page.screenshot({ path: testInfo.outputPath('shop-desktop.png'), fullPage: true });
  expect(watched.errors).toEqual([]);
});
