// Several pages: one shopper's tabs stay in step; two shoppers never see each other's cart.
import { test, expect, expectLive, addFromPage } from '../support/fixtures';

test('a change in one tab appears in the other within a second, both ways', async ({ context }) => {
  const a = await context.newPage();
  const b = await context.newPage();
  await a.goto('/');
  await b.goto('/');
  await expectLive(a);
  await expectLive(b);

  await addFromPage(a, 'copper-planter', 2);
  await expect(b.locator('.cart-count')).toHaveText('2', { timeout: 1000 });
  await expect(b.locator('.cart-line[data-product-id="copper-planter"] .line-quantity')).toHaveValue('2', { timeout: 1000 });

  await b.getByRole('button', { name: 'One more Copper Planter' }).click();
  await expect(a.locator('.cart-count')).toHaveText('3', { timeout: 1000 });
  await expect(a.locator('.shopping-cart .total')).toHaveText('€108.00', { timeout: 1000 });

  await a.getByRole('button', { name: 'Clear cart' }).click();
  await expect(b.locator('.cart-empty')).toBeVisible({ timeout: 1000 });
});

test('two shoppers never see each other\'s cart, not even for a moment', async ({ browser, baseURL }) => {
  const alice = await (await browser.newContext({ baseURL })).newPage();
  const bob = await (await browser.newContext({ baseURL })).newPage();
  const bobFrames: string[] = [];
  bob.on('websocket', (ws) => ws.on('framereceived', (f) => bobFrames.push(String(f.payload))));
  await alice.goto('/');
  await bob.goto('/');
  await expectLive(alice);
  await expectLive(bob);
  // Record every value Bob's badge ever shows and every cart frame his sockets receive.
  await bob.evaluate(() => {
    const seen: string[] = [];
    (window as any).__badges = seen;
    const badge = document.querySelector('.cart-count')!;
    new MutationObserver(() => seen.push(badge.textContent!.trim())).observe(badge, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });

  await addFromPage(alice, 'bamboo-organizer', 3);
  await expect(alice.locator('.cart-count')).toHaveText('3');
  // Bob makes a change of his own afterwards: once it shows, anything of Alice's would have arrived before it.
  await addFromPage(bob, 'beeswax-candle', 1);
  await expect(bob.locator('.cart-count')).toHaveText('1');
  const badges: string[] = await bob.evaluate(() => (window as any).__badges);
  expect(badges.every((b) => b === '0' || b === '1')).toBe(true);
  expect(badges.at(-1)).toBe('1');
  expect(bobFrames.length).toBeGreaterThan(0);
  await expect(bob.locator('.cart-line[data-product-id="bamboo-organizer"]')).toHaveCount(0);
  // No cart frame of Bob's names Alice's product (presence frames count carts holding it, by design: counts only).
  const cartFrames = bobFrames.filter((f) => f.startsWith('{"type":"CART_UPDATE"'));
  expect(cartFrames.length).toBeGreaterThan(0);
  expect(cartFrames.some((f) => f.includes('bamboo-organizer'))).toBe(false);
  const presence = bobFrames.filter((f) => f.startsWith('{"type":"PRESENCE"'));
  expect(presence.every((f) => Object.keys(JSON.parse(f)).every((k) => ['type', 'online', 'in_carts'].includes(k)))).toBe(true);
  await expect(alice.locator('.cart-line[data-product-id="beeswax-candle"]')).toHaveCount(0);
});

test('a new session (cookies cleared) starts a new cart that all three parts show at once', async ({ context }) => {
  const page = await context.newPage();
  await page.goto('/');
  await expectLive(page);
  for (const id of ['copper-planter', 'beeswax-candle', 'bamboo-organizer']) {
    await addFromPage(page, id, 1);
  }
  await expect(page.locator('.cart-count')).toHaveText('3');
  // The session ends (cookie cleared or expired): the next change makes a new cart at version 1, lower than
  // the 3 every part shows. Its epoch differs, so every part takes it.
  await context.clearCookies();
  await addFromPage(page, 'stoneware-mug', 1);
  await expect(page.locator('.cart-count')).toHaveText('1', { timeout: 1000 });
  await expect(page.locator('.cart-line')).toHaveCount(1, { timeout: 1000 });
  await expect(page.locator('.cart-line[data-product-id="stoneware-mug"] .line-quantity')).toHaveValue('1', { timeout: 1000 });
  await expect(page.locator('.product-card[data-product-id="copper-planter"] .in-cart')).toHaveText('', { timeout: 1000 });
  await expect(page.locator('.product-card[data-product-id="stoneware-mug"] .in-cart')).not.toHaveText('', { timeout: 1000 });
});

test('"+" pressed in two tabs at once counts twice, and checkout names the cart and total it shows', async ({ context }) => {
  const a = await context.newPage();
  const b = await context.newPage();
  await a.goto('/');
  await b.goto('/');
  await expectLive(a);
  await expectLive(b);
  await addFromPage(a, 'glass-carafe', 1);
  await expect(b.locator('.cart-line[data-product-id="glass-carafe"] .line-quantity')).toHaveValue('1');
  const plus = (p: typeof a) => p.getByRole('button', { name: 'One more Glass Carafe' }).click();
  await Promise.all([plus(a), plus(b)]);
  for (const p of [a, b]) {
    await expect(p.locator('.cart-line[data-product-id="glass-carafe"] .line-quantity')).toHaveValue('3');
  }

  const sent = a.waitForRequest((r) => r.url().endsWith('/api/cart/checkout'));
  await a.getByRole('button', { name: 'Checkout' }).click();
  const checkout = await sent;
  expect(checkout.headers()['if-match']).toMatch(/^"[0-9a-f]{16}\.3"$/);
  expect(JSON.parse(checkout.postData() ?? '{}').expected_total_cents).toBeGreaterThan(0);
  await expect(a.locator('.order-confirmation')).toBeVisible();
  await expect(b.locator('.cart-count')).toHaveText('0');
});
