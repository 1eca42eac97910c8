// Two server instances sharing one Redis: tab A talks to instance 1, tab B to instance 2 (cookies are per host,
// not per port, so both tabs are one shopper) and they stay in step both ways.
import { test as base, expect } from '@playwright/test';
import { expectLive, addFromPage, watch } from '../support/fixtures';
import { RedisServer } from '../support/redis';
import { ShopServer } from '../support/server';

const test = base.extend<{}, { instances: [ShopServer, ShopServer] }>({
  instances: [
    async ({}, use) => {
      const redis = await RedisServer.start();
      const one = await ShopServer.start(['--redis-url', redis.url]);
      const two = await ShopServer.start(['--redis-url', redis.url]);
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
  await expect(b.locator('.cart-line[data-product-id="linen-notebook"] .line-quantity')).toHaveText('2');

  await addFromPage(b, 'glass-carafe', 1);
  await expect(a.locator('.cart-count')).toHaveText('3', { timeout: 2000 });
  await expect(a.locator('.cart-line[data-product-id="glass-carafe"] .line-quantity')).toHaveText('1');

  await a.getByRole('button', { name: 'Clear cart' }).click();
  await expect(b.locator('.cart-empty')).toBeVisible({ timeout: 2000 });
  expect(watchedA.errors).toEqual([]);
  expect(watchedB.errors).toEqual([]);
});
