// Two server instances sharing one Redis: tab A talks to instance 1, tab B to instance 2 (cookies are per host,
// not per port, so both tabs are one shopper) and they stay in step both ways; and the same two behind a real
// nginx (deploy/nginx.conf.template), one shop URL, round robin, no sticky sessions.
import { test as base, expect } from '@playwright/test';
import { expectLive, addFromPage, watch } from '../support/fixtures';
import { Nginx } from '../support/nginx';
import { RedisServer } from '../support/redis';
import { ShopServer } from '../support/server';

const test = base.extend<{}, { instances: [ShopServer, ShopServer] }>({
  instances: [
    async ({}, use) => {
      const redis = await RedisServer.start();
      const flags = ['--redis-url', redis.url, '--trusted-proxies', '127.0.0.1'];
      const one = await ShopServer.start(flags);
      const two = await ShopServer.start(flags);
      await use([one, two]);
      await one.dispose();
      await two.dispose();
      await redis.dispose();
    },
    { scope: 'worker' },
  ],
});

test('tab A on instance 1 and tab B on instance 2 stay in sync', async ({ context, instances: [one, two] }) => {
  const a = await context.newPage();
  const b = await context.newPage();
  const watchedA = watch(a);
  const watchedB = watch(b);
  await a.goto(one.url);
  await b.goto(two.url);
  await expectLive(a);
  await expectLive(b);
  // Instance 2 took instance 1's cookie: still one session.
  expect((await context.cookies()).length).toBe(1);

  await addFromPage(a, 'linen-notebook', 2);
  await expect(b.locator('.cart-count')).toHaveText('2', { timeout: 2000 });
  await expect(b.locator('.cart-line[data-product-id="linen-notebook"] .line-quantity')).toHaveValue('2');

  await addFromPage(b, 'glass-carafe', 1);
  await expect(a.locator('.cart-count')).toHaveText('3', { timeout: 2000 });
  await expect(a.locator('.cart-line[data-product-id="glass-carafe"] .line-quantity')).toHaveValue('1');

  await a.getByRole('button', { name: 'Clear cart' }).click();
  await expect(b.locator('.cart-empty')).toBeVisible({ timeout: 2000 });
  expect(watchedA.errors).toEqual([]);
  expect(watchedB.errors).toEqual([]);
});

test('behind nginx: two tabs on one shop URL, spread over both instances, stay in sync', async ({ context, instances: [one, two] }) => {
  const nginx = await Nginx.start([`127.0.0.1:${one.port}`, `127.0.0.1:${two.port}`]);
  try {
    const socketsBefore = await Promise.all([one, two].map((i) => wsTotal(i.url)));
    const a = await context.newPage();
    const b = await context.newPage();
    const watchedA = watch(a);
    const watchedB = watch(b);
    await a.goto(nginx.url);
    await b.goto(nginx.url);
    await expectLive(a);
    await expectLive(b);

    await addFromPage(a, 'stoneware-mug', 2);
    await expect(b.locator('.cart-count')).toHaveText('2', { timeout: 2000 });
    await addFromPage(b, 'cork-coasters', 1);
    await expect(a.locator('.cart-count')).toHaveText('3', { timeout: 2000 });
    await expect(a.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('1');

    // The six sockets (three parts × two tabs) went through nginx to the instances.
    const socketsAfter = await Promise.all([one, two].map((i) => wsTotal(i.url)));
    const opened = socketsAfter.map((n, i) => n - socketsBefore[i]);
    console.log(`behind nginx: WebSockets per instance ${opened.join(' + ')}`);
    expect(opened[0] + opened[1]).toBeGreaterThanOrEqual(6);
    await a.getByRole('button', { name: 'Clear cart' }).click();
    await expect(b.locator('.cart-empty')).toBeVisible({ timeout: 2000 });
    expect(watchedA.errors).toEqual([]);
    expect(watchedB.errors).toEqual([]);
    await a.close();
    await b.close();
  } finally {
    await nginx.dispose();
  }
});

async function wsTotal(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('cartwheel_ws_connections_total '));
  return line ? Number(line.split(' ')[1]) : 0;
}
