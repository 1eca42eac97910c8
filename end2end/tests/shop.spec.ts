// One shopper on one page: first paint without JavaScript, the cart's arithmetic through the UI, refusals,
// idempotent retries, and screenshots for people.
import { test, expect, watch, expectLive, cartOnPage, addFromPage } from '../support/fixtures';

test('without JavaScript the products, prices, badge and this session\'s lines are visible', async ({ browser, baseURL }) => {
  const context = await browser.newContext({ baseURL, javaScriptEnabled: false });
  // The context's request client shares its cookie jar: these changes belong to the page's session.
  await context.request.post('/api/cart', { data: { product_id: 'stoneware-mug', quantity: 2 } });
  await context.request.post('/api/cart', { data: { product_id: 'beeswax-candle' } });
  const page = await context.newPage();
  await page.goto('/');
  await expect(page.locator('.product-card')).toHaveCount(14);
  await expect(page.locator('.product-card[data-product-id="walnut-desk-lamp"] .price')).toHaveText('€129.00');
  await expect(page.locator('.product-card[data-product-id="walnut-desk-lamp"] .stock')).toHaveText('Only 3 left');
  await expect(page.locator('.cart-count')).toHaveText('3');
  await expect(page.locator('.cart-line[data-product-id="stoneware-mug"] .line-quantity')).toHaveValue('2');
  await expect(page.locator('.cart-line[data-product-id="stoneware-mug"] .line-total')).toHaveText('€36.00');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€52.00');
  await context.close();
});

test('add, +, −, remove and clear keep the cart, the badge and the totals right', async ({ page }) => {
  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);

  await addFromPage(page, 'glass-carafe', 2); // 2 × €26.00
  await expect(page.locator('.cart-count')).toHaveText('2');
  await addFromPage(page, 'cork-coasters', 3); // 3 × €9.50
  await expect(page.locator('.cart-count')).toHaveText('5');
  await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-total')).toHaveText('€28.50');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€80.50');
  await expect(page.locator('.product-card[data-product-id="glass-carafe"] .in-cart')).toHaveText('2 in your cart');

  const carafe = page.locator('.cart-line[data-product-id="glass-carafe"]');
  await carafe.getByRole('button', { name: 'One more Glass Carafe' }).click();
  await expect(carafe.locator('.line-quantity')).toHaveValue('3');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€106.50');
  const fewer = carafe.getByRole('button', { name: 'One fewer Glass Carafe' });
  await fewer.click();
  await expect(carafe.locator('.line-quantity')).toHaveValue('2');
  await fewer.click();
  await expect(carafe.locator('.line-quantity')).toHaveValue('1');
  await expect(page.locator('.cart-count')).toHaveText('4');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€54.50');

  await page.getByRole('button', { name: 'Remove Cork Coasters' }).click();
  await expect(page.locator('.cart-line')).toHaveCount(1);
  await expect(page.locator('.cart-count')).toHaveText('1');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€26.00');

  await page.getByRole('button', { name: 'Clear cart' }).click();
  await expect(page.locator('.cart-empty')).toBeVisible();
  await expect(page.locator('.cart-count')).toHaveText('0');
  expect(await cartOnPage(page)).toEqual({ badge: '0', total: null, lines: {} });
  expect(watched.errors).toEqual([]);
});

test('click to badge: median of 20 adds', async ({ page }) => {
  await page.goto('/');
  await expectLive(page);
  const button = page.locator('.product-card[data-product-id="linen-notebook"] button[type=submit]');
  const times: number[] = [];
  for (let n = 1; n <= 20; n++) {
    await expect(button).toBeEnabled();
    times.push(
      await page.evaluate((expected) => {
        const badge = document.querySelector('.cart-count')!;
        const add = document.querySelector('.product-card[data-product-id="linen-notebook"] button[type=submit]') as HTMLButtonElement;
        return new Promise<number>((resolve) => {
          const t0 = performance.now();
          const seen = new MutationObserver(() => {
            if (badge.textContent!.trim() === String(expected)) {
              seen.disconnect();
              resolve(performance.now() - t0);
            }
          });
          seen.observe(badge, { childList: true, characterData: true, subtree: true });
          add.click();
        });
      }, n),
    );
  }
  times.sort((a, b) => a - b);
  const median = (times[9] + times[10]) / 2;
  console.log(`click to badge: median ${median.toFixed(1)} ms, min ${times[0].toFixed(1)} ms, max ${times[19].toFixed(1)} ms (20 clicks)`);
  test.info().annotations.push({ type: 'click-to-badge median ms', description: median.toFixed(1) });
  await expect(page.locator('.cart-count')).toHaveText('20');
});

test('more than the stock shows the server\'s words and changes nothing', async ({ page }) => {
  await page.goto('/');
  await expectLive(page);
  await addFromPage(page, 'walnut-desk-lamp', 4);
  const card = page.locator('.product-card[data-product-id="walnut-desk-lamp"]');
  await expect(card.locator('.error')).toContainText('only 3');
  await expect(page.locator('.cart-count')).toHaveText('0');
  await expect(page.locator('.cart-empty')).toBeVisible();
  const api = await (await page.request.get('/api/cart')).json();
  expect(api.version).toBe(0);
  // Sold out cannot even be tried.
  await expect(page.locator('.product-card[data-product-id="brass-pen"] button[type=submit]')).toBeDisabled();
});

test('with the socket down, each click adds once even when its answer is lost and retried', async ({ page }) => {
  await page.routeWebSocket('**/ws*', (ws) => ws.close());
  await page.goto('/');
  // Every change's first attempt reaches the server but its answer is "lost" (connection reset): the page
  // retries with the same Idempotency-Key, and the server answers with the first result instead of adding again.
  const attempts = new Map<string, number>();
  await page.route('**/api/cart', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const key = route.request().headers()['idempotency-key'];
    attempts.set(key, (attempts.get(key) ?? 0) + 1);
    if (attempts.get(key) === 1) {
      await route.fetch();
      return route.abort('connectionreset');
    }
    return route.continue();
  });
  const add = page.locator('.product-card[data-product-id="stoneware-mug"] button[type=submit]');
  // A double click: the second click lands on a button that is busy with the first change.
  await add.dblclick();
  await expect(page.locator('.cart-count')).toHaveText('1');
  await expect(add).toBeEnabled();
  await add.click();
  await expect(page.locator('.cart-count')).toHaveText('2');
  await expect(add).toBeEnabled();

  const api = await (await page.request.get('/api/cart')).json();
  expect(api.item_count).toBe(2);
  expect(api.version).toBe(2);
  expect([...attempts.values()]).toEqual([2, 2]);
  for (const key of attempts.keys()) expect(key).toMatch(/^[0-9a-f]{32}$/);
});

test('screenshots: desktop and phone', async ({ browser, baseURL }, testInfo) => {
  for (const [name, viewport] of [
    ['desktop', { width: 1280, height: 900 }],
    ['phone', { width: 390, height: 844 }],
  ] as const) {
    const context = await browser.newContext({ baseURL, viewport, deviceScaleFactor: name === 'phone' ? 2 : 1 });
    await context.request.post('/api/cart', { data: { product_id: 'walnut-desk-lamp', quantity: 1 } });
    await context.request.post('/api/cart', { data: { product_id: 'stoneware-mug', quantity: 2 } });
    const page = await context.newPage();
    await page.goto('/');
    await expectLive(page);
    const path = testInfo.outputPath(`shop-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    await testInfo.attach(`shop-${name}`, { path, contentType: 'image/png' });
    await context.close();
  }
});
