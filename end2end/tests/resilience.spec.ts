// When WebSockets fail: blocked from the start, a server restart, a flaky network. The page keeps working over
// REST and page events, says so, and reconnects by itself on the backoff schedule — never by a reload.
import { test, expect, expectLive, addFromPage } from '../support/fixtures';
import { ShopServer } from '../support/server';

const WS = /\/ws(\?|$)/;

test('with /ws blocked from the start, every part of the page still updates, and other tabs arrive by refresh', async ({ context, page }) => {
  await context.routeWebSocket(WS, (ws) => ws.close());
  await page.goto('/');
  await expect(page.locator('.connection .status-text')).toHaveText('Reconnecting… changes still save');
  await expect(page.locator('.product-list')).toHaveAttribute('data-link', 'reconnecting');

  await addFromPage(page, 'glass-carafe', 2);
  await expect(page.locator('.cart-count')).toHaveText('2'); // shell
  await expect(page.locator('.cart-line[data-product-id="glass-carafe"] .line-quantity')).toHaveValue('2'); // cart
  await expect(page.locator('.product-card[data-product-id="glass-carafe"] .in-cart')).toHaveText('2 in your cart'); // list

  await page.getByRole('button', { name: 'One more Glass Carafe' }).click();
  await expect(page.locator('.cart-count')).toHaveText('3');
  await expect(page.locator('.product-card[data-product-id="glass-carafe"] .in-cart')).toHaveText('3 in your cart');
  await expect(page.locator('.shopping-cart .total')).toHaveText('€78.00');

  // Another tab of the same shopper changes the cart: with no socket, the slow refresh (5 s) brings it.
  await context.request.post('/api/cart', { data: { product_id: 'cork-coasters', quantity: 1 } });
  await expect(page.locator('.cart-count')).toHaveText('4', { timeout: 12_000 });
  await expect(page.locator('.cart-line[data-product-id="cork-coasters"]')).toHaveCount(1);

  await page.getByRole('button', { name: 'Clear cart' }).click();
  await expect(page.locator('.cart-count')).toHaveText('0');
  await expect(page.locator('.cart-empty')).toBeVisible();
  await expect(page.locator('.product-card[data-product-id="glass-carafe"] .in-cart')).toHaveText('');
});

test('a server restart: every part says so, reconnects without a reload, and catches up', async ({ browser }) => {
  // The first retry after a shutdown (1001) is spread over 1 s here (5 s by default; see liveness.spec.ts).
  const server = await ShopServer.start(['--reconnect-base-ms', '200', '--reconnect-max-ms', '1000', '--reconnect-restart-spread-ms', '1000']);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    let loads = 0;
    page.on('load', () => loads++);
    await page.goto('/');
    await expectLive(page);
    await addFromPage(page, 'stoneware-mug', 2);
    await expect(page.locator('.cart-count')).toHaveText('2');

    await server.stop();
    for (const part of ['.product-list', '.shopping-cart']) {
      await expect(page.locator(part)).toHaveAttribute('data-link', /reconnecting|offline/);
    }
    await expect(page.locator('.connection tr[data-mfe="shell"]')).toHaveAttribute('data-state', /reconnecting|offline/);
    await expect(page.locator('.connection')).toHaveAttribute('data-state', /reconnecting|offline/);

    await server.restart();
    // Another tab of this shopper changes the cart while this page is still disconnected.
    const r = await context.request.post('/api/cart', { data: { product_id: 'cork-coasters', quantity: 1 } });
    expect(r.status()).toBe(200);
    await expectLive(page);
    await expect(page.locator('.cart-count')).toHaveText('3');
    await expect(page.locator('.cart-line[data-product-id="stoneware-mug"] .line-quantity')).toHaveValue('2');
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('1');
    expect(loads).toBe(1);
    await context.close();
  } finally {
    await server.dispose();
  }
});

test('reconnect attempts back off with jitter and stop growing at the cap', async ({ browser }) => {
  const base = 100;
  const cap = 800;
  const minDelay = 100; // ReconnectPolicy::DEFAULT_MIN_DELAY
  const server = await ShopServer.start(['--reconnect-base-ms', String(base), '--reconnect-max-ms', String(cap)]);
  try {
    const page = await (await browser.newContext({ baseURL: server.url })).newPage();
    // What each bundle planned: the delay it published (its link report) after its n-th failure.
    await page.addInitScript(() => {
      const plans: Record<string, Record<number, number>> = {};
      (window as any).__plans = plans;
      window.addEventListener('cartwheel:link', (e) => {
        const r = (e as CustomEvent).detail;
        if (r?.state === 'reconnecting' && typeof r.retry_in_ms === 'number') {
          (plans[r.mfe] ??= {})[r.failures] ??= r.retry_in_ms;
        }
      });
    });
    const attempts: Record<string, number[]> = {};
    await page.routeWebSocket(WS, (ws) => {
      const mfe = new URL(ws.url()).searchParams.get('mfe') ?? '?';
      (attempts[mfe] ??= []).push(Date.now());
      ws.close();
    });
    await page.goto('/');
    const enough = 10;
    const mfes = ['shell', 'product-list', 'shopping-cart'];
    await expect
      .poll(() => Math.min(...mfes.map((m) => attempts[m]?.length ?? 0)), { timeout: 30_000 })
      .toBeGreaterThanOrEqual(enough);
    const plans: Record<string, Record<number, number>> = await page.evaluate(() => (window as any).__plans);

    // The schedule itself is exact: after the n-th failure a draw from [min delay, min(base × 2^(n−1), cap)].
    // How late the browser's timers then fire is the machine's (three bundles compile while the first ones
    // retry), so the observed gaps are held to their plan: never early, late by little as a rule, and never
    // by much.
    const early: number[] = [];
    const late: number[] = [];
    const lateness: number[] = [];
    for (const mfe of mfes) {
      const times = attempts[mfe];
      const gaps = times.slice(1, enough).map((t, i) => t - times[i]);
      const planned = gaps.map((_, i) => plans[mfe]?.[i + 1]);
      console.log(`${mfe}: planned ${planned.join(', ')} ms; gaps ${gaps.join(', ')} ms`);
      gaps.forEach((gap, i) => {
        const plan = planned[i];
        const ceiling = Math.min(base * 2 ** i, cap);
        expect(plan, `${mfe} plan ${i + 1}`).toBeDefined();
        expect(plan!, `${mfe} plan ${i + 1}`).toBeLessThanOrEqual(ceiling);
        expect(plan!, `${mfe} plan ${i + 1}`).toBeGreaterThanOrEqual(Math.min(minDelay, ceiling));
        expect(gap, `${mfe} gap ${i + 1}: not before its plan`).toBeGreaterThanOrEqual(plan! - 20);
        expect(gap, `${mfe} gap ${i + 1}: not far after its plan`).toBeLessThanOrEqual(plan! + 1_500);
        lateness.push(gap - plan!);
      });
      early.push(...planned.slice(0, 2).map(Number));
      late.push(...planned.slice(4).map(Number));
    }
    lateness.sort((a, b) => a - b);
    const median = lateness[Math.floor(lateness.length / 2)];
    console.log(`lateness of attempts after their plan: median ${median} ms, max ${lateness[lateness.length - 1]} ms`);
    expect(median, 'attempts follow their plan').toBeLessThanOrEqual(150);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(late), 'delays grow').toBeGreaterThan(mean(early) * 1.5);
    expect(Math.max(...late) - Math.min(...late), 'jitter: not a fixed interval').toBeGreaterThan(50);
  } finally {
    await server.dispose();
  }
});
