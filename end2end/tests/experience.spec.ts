// The shopper's experience at the edges: a phone (cart bar and drawer), a laptop with a long cart, the keyboard
// alone, a screen reader's view (axe-core, in every main state), no JavaScript at all, a bundle that fails to
// load, another locale's money, and Undo.
import AxeBuilder from '@axe-core/playwright';
import { Page } from '@playwright/test';
import { testWithServer, expect, expectLive, addFromPage, watch } from '../support/fixtures';

const TOKEN = 'e2e-experience-token-0123456789';

// This file's own server: the service API on (to fill stock for the long cart), short undo and toast windows.
const test = testWithServer(['--service-token', TOKEN, '--view-undo-ms', '1500', '--view-toast-ms', '1000']);

const PHONE = { width: 390, height: 844 };
const LAPTOP = { width: 1280, height: 720 };

/** axe-core on the page as it is: every serious or critical violation, by rule, with where. The name-mismatch
 *  rule is experimental in axe (off by default) and on here. */
async function seriousViolations(page: Page): Promise<string[]> {
  const results = await new AxeBuilder({ page })
    .options({ rules: { 'label-content-name-mismatch': { enabled: true } } })
    .analyze();
  return results.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

async function axeCounts(page: Page): Promise<string> {
  const results = await new AxeBuilder({ page })
    .options({ rules: { 'label-content-name-mismatch': { enabled: true } } })
    .analyze();
  const by = (impact: string) => results.violations.filter((v) => v.impact === impact).length;
  return `critical ${by('critical')}, serious ${by('serious')}, moderate ${by('moderate')}, minor ${by('minor')}` +
    (results.violations.length ? ` [${results.violations.map((v) => v.id).join(', ')}]` : '');
}

/** Press Tab until `selector` has the focus (at most `max` presses); fails if it never does. */
async function tabTo(page: Page, selector: string, max = 80): Promise<void> {
  for (let i = 0; i < max; i++) {
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
    await page.keyboard.press('Tab');
  }
  throw new Error(`Tab never reached ${selector}`);
}

async function focused(page: Page): Promise<string> {
  return page.evaluate(() => {
    const a = document.activeElement;
    if (!a || a === document.body) return 'body';
    const row = a.closest('[data-product-id]') as HTMLElement | null;
    return `${a.tagName.toLowerCase()}${a.id ? '#' + a.id : ''}${a.className ? '.' + String(a.className).split(' ').join('.') : ''}${row ? ' in ' + row.dataset.productId : ''}`;
  });
}

test('on a phone the cart bar is in view, opens the cart as a drawer with the focus inside, and every control is thumb-sized', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: PHONE, hasTouch: true, isMobile: true });
  const page = await context.newPage();
  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);
  await addFromPage(page, 'linen-notebook', 2);
  await addFromPage(page, 'glass-carafe', 1);
  const bar = page.locator('.cart-bar');
  await expect(bar).toBeInViewport();
  await expect(bar.locator('.cart-bar-count')).toHaveText('3 items');
  await expect(bar.locator('.cart-bar-total')).toHaveText('€55.00');
  // Two product columns, and nothing wider than the screen.
  const columns = await page.locator('.product-card').evaluateAll((cards) => new Set(cards.map((c) => c.getBoundingClientRect().left)).size);
  expect(columns).toBe(2);
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
  await page.screenshot({ path: test.info().outputPath('phone-cart-closed.png') });

  // Every visible control is at least 44 × 44 CSS px.
  const small = await page.evaluate(() =>
    [...document.querySelectorAll('button, a[href], input:not([type=hidden]), summary')]
      .filter((el) => (el as HTMLElement).offsetParent !== null && !el.closest('[inert]'))
      .map((el) => ({ el, r: el.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && (r.width < 44 || r.height < 44))
      .map(({ el, r }) => `${el.tagName} ${el.className} ${el.textContent?.trim().slice(0, 20)} ${Math.round(r.width)}×${Math.round(r.height)}`));
  expect(small).toEqual([]);

  await bar.getByRole('link', { name: 'View cart' }).click();
  const drawer = page.getByRole('dialog', { name: 'Your cart' });
  await expect(drawer).toBeVisible();
  await expect(page.locator('.drawer-close')).toBeFocused();
  const checkout = drawer.getByRole('button', { name: 'Checkout' });
  await expect(checkout).toBeInViewport();
  // Focus stays in the drawer: everything else is inert.
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Tab');
    const inside = await page.evaluate(() => !document.activeElement || document.activeElement === document.body || !!document.activeElement.closest('.cart-frame'));
    expect(inside, await focused(page)).toBe(true);
  }
  const smallInDrawer = await page.evaluate(() =>
    [...document.querySelectorAll('.cart-frame button, .cart-frame input:not([type=hidden])')]
      .map((el) => el.getBoundingClientRect())
      .filter((r) => r.width > 0 && (r.width < 44 || r.height < 44)).length);
  expect(smallInDrawer).toBe(0);
  await page.screenshot({ path: test.info().outputPath('phone-cart-open.png') });
  console.log(`axe, drawer open: ${await axeCounts(page)}`);
  expect(await seriousViolations(page)).toEqual([]);

  await page.keyboard.press('Escape');
  await expect(drawer).toBeHidden();
  await expect(bar.getByRole('link', { name: 'View cart' })).toBeFocused();

  // A notice's toast sits clear of the cart bar.
  const session = (await (await page.request.get('/api/session')).json()).session;
  const sent = await page.request.post('/api/service/notify', {
    headers: { authorization: `Bearer ${TOKEN}` },
    data: { session, kind: 'info', message: 'Free shipping today.' },
  });
  expect(sent.status()).toBe(202);
  const toast = page.locator('.toasts .toast');
  await expect(toast).toBeVisible();
  const [t, b] = [await toast.boundingBox(), await bar.boundingBox()];
  expect(t!.y + t!.height).toBeLessThanOrEqual(b!.y);
  expect(watched.errors).toEqual([]);
  await context.close();
});

test('on a laptop a cart of 8 lines keeps Checkout in view', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: LAPTOP });
  const page = await context.newPage();
  const lines = ['ceramic-pour-over', 'linen-notebook', 'glass-carafe', 'cork-coasters', 'stoneware-mug', 'bamboo-organizer', 'copper-planter', 'beeswax-candle'];
  for (const product_id of lines) {
    const r = await page.request.post('/api/cart', { data: { product_id, quantity: 1 } });
    expect(r.status()).toBe(200);
  }
  await page.goto('/');
  await expectLive(page);
  await expect(page.locator('.cart-line')).toHaveCount(8);
  await expect(page.getByRole('button', { name: 'Checkout' })).toBeInViewport({ ratio: 1 });
  await page.screenshot({ path: test.info().outputPath('laptop-8-lines.png') });
  console.log(`axe, filled cart: ${await axeCounts(page)}`);
  expect(await seriousViolations(page)).toEqual([]);
  await context.close();
});

test('a purchase with the keyboard alone: focus never falls to the page', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: LAPTOP });
  const page = await context.newPage();
  const watched = watch(page);
  await page.goto('/');
  await expectLive(page);
  console.log(`axe, empty cart: ${await axeCounts(page)}`);
  expect(await seriousViolations(page)).toEqual([]);

  for (const [product, count] of [['linen-notebook', '1'], ['glass-carafe', '2']]) {
    await tabTo(page, `.product-card[data-product-id="${product}"] button[type=submit]`);
    await page.keyboard.press('Enter');
    await expect(page.locator('.cart-count')).toHaveText(count);
    expect(await focused(page)).toBe(`button.button.primary in ${product}`);
  }
  // The quantity field: type and Enter.
  await tabTo(page, '.cart-line[data-product-id="linen-notebook"] input.line-quantity');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('3');
  await page.keyboard.press('Enter');
  await expect(page.locator('.cart-count')).toHaveText('4');
  await expect(page.locator('.cart-line[data-product-id="linen-notebook"] .line-quantity')).toHaveValue('3');
  expect(await focused(page)).toBe('input#qty-line-linen-notebook.line-quantity in linen-notebook');

  // Remove: focus goes to the next line's Remove.
  await tabTo(page, '.cart-line[data-product-id="linen-notebook"] .remove');
  await page.keyboard.press('Enter');
  await expect(page.locator('.cart-line')).toHaveCount(1);
  await expect(page.locator('.cart-line[data-product-id="glass-carafe"] .remove')).toBeFocused();
  await expect(page.locator('.undo')).toContainText('Removed Linen Notebook.');

  await tabTo(page, 'button.checkout');
  await page.keyboard.press('Enter');
  await expect(page.locator('.order-confirmation')).toBeVisible();
  await expect(page.locator('#order-title')).toBeFocused();
  console.log(`axe, order confirmation: ${await axeCounts(page)}`);
  expect(await seriousViolations(page)).toEqual([]);
  expect(watched.errors).toEqual([]);
  await context.close();
});

test('offline, the page says so in words, and axe finds nothing serious', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: LAPTOP });
  const page = await context.newPage();
  await page.goto('/');
  await expectLive(page);
  await addFromPage(page, 'stoneware-mug', 1);
  await expect(page.locator('.cart-count')).toHaveText('1');
  await context.setOffline(true);
  await expect(page.locator('.connection')).toHaveAttribute('data-state', 'offline');
  await expect(page.locator('.product-list .link-state')).toHaveText('Offline');
  await expect(page.locator('.shopping-cart .link-state')).toHaveText('Offline');
  console.log(`axe, offline: ${await axeCounts(page)}`);
  expect(await seriousViolations(page)).toEqual([]);
  await context.setOffline(false);
  await context.close();
});

test('without JavaScript every cart form works and the page shows the result', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: LAPTOP, javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto('/');
  const card = (id: string) => page.locator(`.product-card[data-product-id="${id}"]`);
  const line = (id: string) => page.locator(`.cart-line[data-product-id="${id}"]`);

  await card('linen-notebook').locator('input.quantity').fill('2');
  await card('linen-notebook').getByRole('button', { name: 'Add to cart' }).click();
  await expect(line('linen-notebook').locator('.line-quantity')).toHaveValue('2');
  await expect(page.locator('.cart-count')).toHaveText('2');
  expect(new URL(page.url()).hash).toBe('#product-linen-notebook');

  await line('linen-notebook').locator('.line-quantity').fill('5');
  await line('linen-notebook').locator('.line-quantity').press('Enter');
  await expect(line('linen-notebook').locator('.line-quantity')).toHaveValue('5');
  await line('linen-notebook').getByRole('button', { name: 'One more Linen Notebook' }).click();
  await expect(line('linen-notebook').locator('.line-quantity')).toHaveValue('6');
  await line('linen-notebook').getByRole('button', { name: 'One fewer Linen Notebook' }).click();
  await expect(line('linen-notebook').locator('.line-quantity')).toHaveValue('5');

  // A refusal, in words, on the card.
  await card('glass-carafe').locator('input.quantity').fill('100');
  await card('glass-carafe').getByRole('button', { name: 'Add to cart' }).click();
  await expect(card('glass-carafe').locator('.error')).toHaveText('Enter a whole number of items, from 1 to 99.');
  await card('glass-carafe').locator('input.quantity').fill('1');
  await card('glass-carafe').getByRole('button', { name: 'Add to cart' }).click();
  await expect(page.locator('.cart-line')).toHaveCount(2);

  await line('linen-notebook').getByRole('button', { name: 'Remove Linen Notebook' }).click();
  await expect(line('linen-notebook')).toHaveCount(0);
  await page.getByRole('button', { name: 'Clear cart' }).click();
  await expect(page.locator('.cart-empty')).toBeVisible();
  await expect(page.locator('.cart-count')).toHaveText('0');

  await card('stoneware-mug').getByRole('button', { name: 'Add to cart' }).click();
  await page.getByRole('button', { name: 'Checkout' }).click();
  const confirmation = page.locator('.order-confirmation');
  await expect(confirmation).toBeVisible();
  await expect(confirmation.locator('.order-lines')).toHaveText('1 × Stoneware Mug');
  await expect(confirmation.locator('.order-id')).toHaveText(/^ord_[0-9a-f]{20}$/);
  await expect(page.locator('.cart-count')).toHaveText('0');
  await context.close();
});

test("with the product list's bundle failing to load, its part says so and Add still works", async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: LAPTOP });
  const page = await context.newPage();
  await page.route(/product_list[^/]*\.wasm/, (route) => route.abort());
  await page.goto('/');
  await expect(page.locator('#mfe-product-list .mfe-failed')).toHaveText('This part could not load — the page still works.');
  await expect(page.locator('.connection tr[data-mfe="product-list"]')).toHaveAttribute('data-state', 'failed');
  await expect(page.locator('.connection .status-text')).toHaveText('Part of the page did not load');
  await expect(page.locator('.shopping-cart')).toHaveAttribute('data-link', 'live');
  await page.locator('.product-card[data-product-id="cork-coasters"]').getByRole('button', { name: 'Add to cart' }).click();
  await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('1');
  await expect(page.locator('#mfe-product-list .mfe-failed')).toBeVisible();
  // A refusal is said on the card; once shown, it is taken out of the address, so a reload does not repeat it.
  const mug = page.locator('.product-card[data-product-id="stoneware-mug"]');
  await mug.locator('input.quantity').fill('100');
  await mug.getByRole('button', { name: 'Add to cart' }).click();
  await expect(mug.locator('.error')).toHaveText('Enter a whole number of items, from 1 to 99.');
  await expect.poll(() => new URL(page.url()).search).toBe('');
  await page.reload();
  await expect(page.locator('#mfe-product-list .mfe-failed')).toBeVisible();
  await expect(page.locator('.product-card[data-product-id="stoneware-mug"] .error')).toHaveText('');
  await context.close();
});

test('a German browser sees German money, the same before and after hydration', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url, viewport: LAPTOP, locale: 'de-DE' });
  const page = await context.newPage();
  const warnings: string[] = [];
  page.on('console', (m) => { if (m.type() === 'warning' || m.type() === 'error') warnings.push(m.text()); });
  const r = await page.request.post('/api/cart', { data: { product_id: 'ceramic-pour-over', quantity: 30 } });
  expect(r.status()).toBe(200);
  // What the server rendered, before any script.
  const html = await (await page.request.get('/', { headers: { 'accept-language': 'de-DE,de;q=0.9' } })).text();
  expect(html).toContain('1.020,00\u00a0€');
  await page.goto('/');
  await expectLive(page);
  await expect(page.locator('.shopping-cart .total')).toHaveText('1.020,00\u00a0€');
  await expect(page.locator('.product-card[data-product-id="ceramic-pour-over"] .price')).toHaveText('34,00\u00a0€');
  // A change after hydration is formatted by the bundle with the same function.
  await addFromPage(page, 'linen-notebook', 1);
  await expect(page.locator('.shopping-cart .total')).toHaveText('1.034,50\u00a0€');
  expect(await page.evaluate(() => new Intl.NumberFormat('de-DE', { style: 'currency', currency: 'EUR' }).format(1034.5))).toBe('1.034,50\u00a0€');
  expect(warnings).toEqual([]);
  await context.close();
});

test('Undo after Remove puts the line back one version later, and the offer goes after its window', async ({ page }) => {
  await page.goto('/');
  await expectLive(page);
  await addFromPage(page, 'cork-coasters', 3);
  const line = page.locator('.cart-line[data-product-id="cork-coasters"]');
  await expect(line.locator('.line-quantity')).toHaveValue('3');
  const before = (await (await page.request.get('/api/cart')).json()).version;
  await line.getByRole('button', { name: 'Remove Cork Coasters' }).click();
  await expect(line).toHaveCount(0);
  await page.getByRole('button', { name: 'Undo' }).click();
  await expect(line.locator('.line-quantity')).toHaveValue('3');
  const after = await (await page.request.get('/api/cart')).json();
  expect(after.version).toBe(before + 2);
  await expect(page.locator('.undo')).toBeHidden();

  // Clear, then let the offer lapse (1.5 s here): the cart stays empty.
  await page.getByRole('button', { name: 'Clear cart' }).click();
  await expect(page.locator('.undo')).toContainText('Cart cleared.');
  await expect(page.locator('.undo')).toBeHidden({ timeout: 4000 });
  await expect(page.locator('.cart-empty')).toBeVisible();
});

test('a toast goes by itself, not while the pointer is on it', async ({ page, request, server }) => {
  await page.goto('/');
  await expectLive(page);
  const session = (await (await page.request.get('/api/session')).json()).session;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const send = (message: string) => request.post(`${server.url}/api/service/notify`, { headers: auth, data: { session, kind: 'info', message } });
  expect((await send('First.')).status()).toBe(202);
  const toast = page.locator('.toasts .toast');
  await expect(toast).toHaveText(/First\./);
  await expect(toast).toHaveCount(0, { timeout: 4000 });

  expect((await send('Second.')).status()).toBe(202);
  await expect(toast).toHaveText(/Second\./);
  await toast.hover();
  // Held for three of its windows (1 s each) under the pointer: nothing to await but time.
  await page.waitForTimeout(3000);
  await expect(toast).toHaveCount(1);
  const box = await toast.getByRole('button', { name: 'Dismiss notice' }).boundingBox();
  expect(box!.width).toBeGreaterThanOrEqual(24);
  expect(box!.height).toBeGreaterThanOrEqual(24);
  await page.mouse.move(0, 0);
  await expect(toast).toHaveCount(0, { timeout: 4000 });
});
