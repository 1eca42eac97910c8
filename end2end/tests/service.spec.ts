// Backend services reach shoppers through the server: a stock or price change appears in the product list and
// the cart while the page is open, a notice appears as a toast, and checkout turns the cart into an order.
import { testWithServer, expect, expectLive, addFromPage, watch } from '../support/fixtures';

const TOKEN = 'e2e-service-token-0123456789';

// This file's own server, with the service API switched on.
const test = testWithServer(['--service-token', TOKEN]);

const auth = { authorization: `Bearer ${TOKEN}` };

/** A page that fails the test if it ever reloads. */
async function markNoReload(page: import('@playwright/test').Page): Promise<void> {
  await page.evaluate(() => ((window as any).__sameDocument = true));
}

async function expectSameDocument(page: import('@playwright/test').Page): Promise<void> {
  expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
}

test('a service changes stock and price: the list and the cart show it without a reload', async ({ page, request, server }) => {
  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);
  await addFromPage(page, 'glass-carafe', 2);
  const line = page.locator('.cart-line[data-product-id="glass-carafe"]');
  await expect(line.locator('.line-total')).toHaveText('€52.00');
  await markNoReload(page);

  const patched = await request.patch(`${server.url}/api/service/products/glass-carafe`, {
    headers: auth,
    data: { price_cents: 2000, stock: 1 },
  });
  expect(patched.status()).toBe(200);

  const card = page.locator('.product-card[data-product-id="glass-carafe"]');
  await expect(card.locator('.price')).toHaveText('€20.00');
  await expect(card.locator('.stock')).toHaveText('Only 1 left');
  await expect(line.locator('.line-unit')).toHaveText('€20.00 each');
  await expect(line.locator('.line-total')).toHaveText('€40.00');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€40.00');
  // Two in the cart, one left: the line says so and checkout waits for the shopper to fix it.
  await expect(line).toHaveClass(/over-stock/);
  await expect(line.locator('.line-warning')).toHaveText('Only 1 left: lower the quantity to check out.');
  await expect(page.getByRole('button', { name: 'Checkout' })).toBeDisabled();
  await line.getByRole('button', { name: 'One fewer Glass Carafe' }).click();
  await expect(line.locator('.line-warning')).toBeHidden();
  await expect(page.getByRole('button', { name: 'Checkout' })).toBeEnabled();

  // Sold out elsewhere: that product's "Add" is disabled at once.
  await request.patch(`${server.url}/api/service/products/beeswax-candle`, { headers: auth, data: { stock: 0 } });
  const candle = page.locator('.product-card[data-product-id="beeswax-candle"]');
  await expect(candle.locator('.stock')).toHaveText('Out of stock');
  await expect(candle.locator('button[type=submit]')).toBeDisabled();
  await expect(candle.locator('button[type=submit]')).toHaveText('Sold out');

  await expectSameDocument(page);
  expect(watched.errors).toEqual([]);
});

test('checkout shows the order, empties the cart everywhere and updates the stock live', async ({ page }) => {
  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);
  await addFromPage(page, 'copper-planter', 7); // 9 in stock
  await expect(page.locator('.cart-count')).toHaveText('7');
  await markNoReload(page);

  await page.getByRole('button', { name: 'Checkout' }).click();
  const confirmation = page.locator('.order-confirmation');
  await expect(confirmation).toBeVisible();
  await expect(confirmation.locator('.order-lines')).toHaveText('7 × Copper Planter');
  await expect(confirmation.locator('.order-total strong')).toHaveText('€252.00');
  await expect(confirmation.locator('.order-id')).toHaveText(/^ord_[0-9a-f]{20}$/);
  await expect(page.locator('.cart-count')).toHaveText('0');
  await expect(page.locator('.cart-line')).toHaveCount(0);
  // Every connection heard the new stock: this page's list too.
  await expect(page.locator('.product-card[data-product-id="copper-planter"] .stock')).toHaveText('Only 2 left');
  await page.locator('.shopping-cart').screenshot({ path: test.info().outputPath('order-confirmation.png') });

  await confirmation.getByRole('link', { name: 'Continue shopping' }).click();
  await expect(confirmation).toBeHidden();
  await expect(page.locator('.cart-empty')).toBeVisible();
  await expectSameDocument(page);
  expect(watched.errors).toEqual([]);
});

test("a service's notice to this session appears as a toast that can be dismissed", async ({ page, request, server }) => {
  await page.goto('/');
  await expectLive(page);
  const session = (await (await page.request.get('/api/session')).json()).session;
  const sent = await request.post(`${server.url}/api/service/notify`, {
    headers: auth,
    data: { session, kind: 'price_drop', message: 'The walnut desk lamp is cheaper today.' },
  });
  expect(sent.status()).toBe(202);
  expect((await sent.json()).delivered_now).toBe(3); // one socket per bundle of this page
  const toast = page.locator('.toasts .toast');
  // Three sockets brought it; it is shown once.
  await expect(toast).toHaveCount(1);
  await expect(toast).toHaveText(/The walnut desk lamp is cheaper today\./);
  await expect(toast).toHaveAttribute('data-kind', 'price_drop');
  await page.screenshot({ path: test.info().outputPath('notice.png') });
  await toast.getByRole('button', { name: 'Dismiss notice' }).click();
  await expect(page.locator('.toasts .toast')).toHaveCount(0);
});

test('a notice sent while the page is offline appears when it is back, once, and is not shown again after a reload', async ({ browser, request, server }) => {
  const context = await browser.newContext({ baseURL: server.url });
  const page = await context.newPage();
  await page.goto('/');
  await expectLive(page);
  const session = (await (await page.request.get('/api/session')).json()).session;
  await context.setOffline(true);
  await expect(page.locator('.connection')).toHaveAttribute('data-state', 'offline');
  const sent = await request.post(`${server.url}/api/service/notify`, {
    headers: auth,
    data: { session, kind: 'restock', message: 'The brass pen is back in stock.' },
  });
  expect((await sent.json()).delivered_now).toBe(0);
  await expect(page.locator('.toasts .toast')).toHaveCount(0);
  const back = Date.now();
  await context.setOffline(false);
  await expect(page.locator('.toasts .toast')).toHaveText(/The brass pen is back in stock\./);
  console.log(`notice sent while offline: shown ${Date.now() - back} ms after the network came back`);
  await expect(page.locator('.toasts .toast')).toHaveCount(1);
  // The unread count, cleared by opening the panel, which lists it.
  const unread = page.locator('.notices-unread');
  await expect(unread).toHaveAttribute('data-count', '1');
  await page.locator('.notices summary').click();
  await expect(page.locator('.notices-list .toast-message')).toHaveText(['The brass pen is back in stock.']);
  await expect(unread).toBeHidden();
  await page.screenshot({ path: test.info().outputPath('notices-panel.png') });
  // Shown, so acknowledged: a reload does not bring it back.
  await expect
    .poll(async () => (await (await page.request.get('/api/notices')).json()).notices.length)
    .toBe(0);
  await page.reload();
  await expectLive(page);
  await expect(page.locator('.toasts .toast')).toHaveCount(0);
  await context.close();
});
