// The page never says "Live" while it is not: a socket that goes silent is noticed within its deadline and
// dropped, the cart keeps following by polling meanwhile, and the network going away and back is acted on at
// once. Deadlines are shortened with the server's flags so the tests stay quick and deterministic.
import net from 'node:net';
import { test, expect, expectLive, watch } from '../support/fixtures';
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
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('2');

    // The details say how long ago each part last heard from the server, and it counts up while silent.
    await page.locator('.connection summary').click();
    const heard = page.locator('.connection tr[data-mfe="shopping-cart"] td.heard');
    await expect(heard).toHaveText(/^\d+ s ago$/);
    const before = parseInt((await heard.textContent()) ?? '0', 10);
    await expect.poll(async () => parseInt((await heard.textContent()) ?? '0', 10), { timeout: 3000 }).toBeGreaterThan(before);

    silent = false;
    await expectLive(page);
    await expect(heard).toHaveText(/^(just now|\d+ s ago)$/);
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

test('a proxy that holds the upgrade: polling from page load brings another tab\'s change, and the attempt times out', async ({ browser }) => {
  const server = await ShopServer.start(['--link-connect-timeout-ms', '4000', '--link-poll-ms', '1000']);
  // A real TCP proxy in front of the server that passes HTTP but never answers a WebSocket upgrade (a captive
  // portal, or a proxy without upgrade support that holds the request).
  const held: net.Socket[] = [];
  const clients: net.Socket[] = [];
  const proxy = net.createServer((client) => {
    clients.push(client);
    client.on('error', () => undefined);
    client.once('data', (first) => {
      if (first.toString('latin1').startsWith('GET /ws')) {
        held.push(client);
        return;
      }
      const upstream = net.connect(Number(server.port), '127.0.0.1', () => {
        upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const port = (proxy.address() as net.AddressInfo).port;
  try {
    const context = await browser.newContext({ baseURL: `http://127.0.0.1:${port}` });
    const page = await context.newPage();
    const watched = watch(page);
    const loaded = Date.now();
    await page.goto('/');
    // Another tab of this shopper (straight to the server) changes the cart at once.
    const r = await context.request.post(`${server.url}/api/cart`, { data: { product_id: 'cork-coasters', quantity: 2 } });
    expect(r.status()).toBe(200);
    await expect(page.locator('.cart-count')).toHaveText('2', { timeout: 4000 });
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('2');
    console.log(`held handshake: another tab's change shown ${Date.now() - loaded} ms after page load (connect timeout 4 s)`);
    expect(Date.now() - loaded).toBeLessThan(4000);
    // Browsers open one WebSocket per host at a time while it is connecting: one upgrade is held, the
    // other parts' sockets wait behind it in the browser. Each part's own connect timeout covers both.
    expect(held.length).toBeGreaterThanOrEqual(1);
    for (const part of PARTS) {
      // Each part's 4 s runs from its own socket, created when that part finished hydrating.
      await expect(page.locator(part)).toHaveAttribute('data-link', 'reconnecting', { timeout: 6000 });
    }
    console.log(`held handshake: every part "reconnecting" ${Date.now() - loaded} ms after page load`);
    expect(watched.errors.filter((e) => !/WebSocket/.test(e))).toEqual([]);
    await context.close();
  } finally {
    clients.forEach((s) => s.destroy());
    await new Promise((resolve) => proxy.close(resolve));
    await server.dispose();
  }
});

test('after a restart with 20 pages open, their reconnects are spread out, not a storm', async ({ browser }) => {
  test.setTimeout(120_000);
  // 20 tabs of one shopper hold 60 sockets: above the default cap of 32 per session.
  const server = await ShopServer.start(['--reconnect-base-ms', '200', '--reconnect-max-ms', '1000', '--max-sockets-per-session', '64']);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    // Every socket any page creates, with when.
    await context.addInitScript(() => {
      const Native = window.WebSocket;
      const made: { url: string; at: number }[] = [];
      (window as unknown as { __sockets: typeof made }).__sockets = made;
      window.WebSocket = class extends Native {
        constructor(url: string | URL, protocols?: string | string[]) {
          super(url, protocols);
          made.push({ url: String(url), at: Date.now() });
        }
      };
    });
    const pages = [];
    for (let i = 0; i < 20; i++) {
      const page = await context.newPage();
      await page.goto('/');
      pages.push(page);
    }
    for (const page of pages) await expectLive(page);

    const stopped = Date.now();
    await server.stop();
    await server.restart();
    // Up to the 5 s spread, then the usual backoff.
    for (const page of pages) {
      for (const part of PARTS) await expect(page.locator(part)).toHaveAttribute('data-link', 'live', { timeout: 15_000 });
      await expect(page.locator('.connection tr[data-mfe="shell"]')).toHaveAttribute('data-state', 'live', { timeout: 15_000 });
    }

    const firsts: number[] = [];
    for (const page of pages) {
      const made: { url: string; at: number }[] = await page.evaluate(() => (window as any).__sockets);
      for (const mfe of ['shell', 'product-list', 'shopping-cart']) {
        const retry = made.filter((s) => s.url.includes(`mfe=${mfe}`) && s.at >= stopped).map((s) => s.at);
        expect(retry.length, `${mfe} reconnected`).toBeGreaterThan(0);
        firsts.push(Math.min(...retry) - stopped);
      }
    }
    firsts.sort((a, b) => a - b);
    let busiest = 0;
    for (let i = 0, j = 0; j < firsts.length; j++) {
      while (firsts[j] - firsts[i] > 50) i++;
      busiest = Math.max(busiest, j - i + 1);
    }
    const spread = firsts[firsts.length - 1] - firsts[0];
    console.log(`restart: ${firsts.length} first retries over ${spread} ms (${firsts[0]}–${firsts[firsts.length - 1]} ms after the stop), at most ${busiest} in any 50 ms`);
    expect(busiest).toBeLessThan(firsts.length / 2);
    expect(busiest).toBeLessThanOrEqual(10);
    expect(spread).toBeGreaterThan(2500);
    await context.close();
  } finally {
    await server.dispose();
  }
});
