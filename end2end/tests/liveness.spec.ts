// The page never says "Live" while it is not: a socket that goes silent is noticed within its deadline and
// dropped, the cart keeps following by polling meanwhile, and the network going away and back is acted on at
// once. Deadlines are shortened with the server's flags so the tests stay quick and deterministic.
import { test, expect, expectLive } from '../support/fixtures';
import { ShopServer } from '../support/server';

const WS = /\/ws(\?|$)/;
const FAST = [
  '--link-ping-ms', '1000', '--link-deadline-ms', '1000', '--link-poll-ms', '1000',
  '--reconnect-base-ms', '200', '--reconnect-max-ms', '1000',
];
const PARTS = ['.product-list', '.shopping-cart'];

test('a socket that goes silent is dropped within its deadline, the cart follows by polling, and it heals', async ({ browser }) => {
  const server = await ShopServer.start(FAST);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    // A relay that can stop forwarding in both directions: a laptop that slept, a NAT that dropped the flow.
    let silent = false;
    await context.routeWebSocket(WS, (ws) => {
      const upstream = ws.connectToServer();
      ws.onMessage((m) => { if (!silent) upstream.send(m); });
      upstream.onMessage((m) => { if (!silent) ws.send(m); });
    });
    const page = await context.newPage();
    await page.goto('/');
    await expectLive(page);

    silent = true;
    const quiet = Date.now();
    for (const part of PARTS) {
      // ping after 1 s of silence + 1 s deadline, and a little slack for the timers.
      await expect(page.locator(part)).not.toHaveAttribute('data-link', 'live', { timeout: 3500 });
    }
    const detected = Date.now() - quiet;
    console.log(`silent socket: left "live" after ${detected} ms (ping 1000 ms + deadline 1000 ms)`);
    await expect(page.locator('.connection tr[data-mfe="shell"]')).not.toHaveAttribute('data-state', 'live');

    // Another tab changes the cart: with every socket silent, polling brings it.
    const r = await context.request.post('/api/cart', { data: { product_id: 'cork-coasters', quantity: 2 } });
    expect(r.status()).toBe(200);
    await expect(page.locator('.cart-count')).toHaveText('2', { timeout: 5000 });
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveText('2');

    silent = false;
    await expectLive(page);
    await context.close();
  } finally {
    await server.dispose();
  }
});

test('offline is shown at once and online reconnects at once, whatever the backoff had reached', async ({ browser }) => {
  const server = await ShopServer.start(['--reconnect-base-ms', '5000', '--reconnect-max-ms', '20000']);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    await page.goto('/');
    await expectLive(page);
    const down = Date.now();
    await context.setOffline(true);
    for (const part of PARTS) {
      await expect(page.locator(part)).toHaveAttribute('data-link', 'offline', { timeout: 1000 });
    }
    console.log(`offline: shown after ${Date.now() - down} ms`);
    const up = Date.now();
    await context.setOffline(false);
    // The schedule would wait up to 5 s; the network coming back means now.
    for (const part of PARTS) {
      await expect(page.locator(part)).toHaveAttribute('data-link', 'live', { timeout: 2000 });
    }
    console.log(`online: live again after ${Date.now() - up} ms`);
    await context.close();
  } finally {
    await server.dispose();
  }
});
