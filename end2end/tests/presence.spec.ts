// Presence in the page: "N shoppers here" in the header and "in N carts" on a product's card, both rendered by
// the server and kept current from PRESENCE frames without a reload.
import { testWithServer, expect, expectLive, addFromPage, watch } from '../support/fixtures';

// This file's own server, with a short presence interval so the test waits for events, not for the default.
const test = testWithServer(['--presence-interval-ms', '200']);

test('"in N carts" and "N shoppers here" follow other shoppers live, and the server renders them', async ({ browser, server }) => {
  const first = await browser.newContext({ baseURL: server.url });
  const second = await browser.newContext({ baseURL: server.url });
  const one = await first.newPage();
  const watched = watch(one);
  const two = await second.newPage();
  await one.goto('/');
  await two.goto('/');
  await expectLive(one);
  await expectLive(two);
  await expect(one.locator('.online')).toHaveText('2 shoppers here');
  const label = one.locator('.product-card[data-product-id="glass-carafe"] .in-carts');
  await expect(label).toBeHidden();
  await addFromPage(one, 'glass-carafe');
  await expect(one.locator('.shopping-cart .cart-line')).toHaveCount(1);
  // One cart holds it: no label yet (from two on). The other shopper adds it too.
  await expect(label).toBeHidden();
  const added = Date.now();
  await addFromPage(two, 'glass-carafe');
  await expect(label).toHaveText('in 2 carts');
  await one.screenshot({ path: test.info().outputPath('presence.png') });
  console.log(`"in 2 carts" shown ${Date.now() - added} ms after the other shopper's add (interval 200 ms)`);
  // A page loaded now has both labels from the server, before any bundle runs.
  const plain = await browser.newContext({ baseURL: server.url, javaScriptEnabled: false });
  const still = await plain.newPage();
  await still.goto('/');
  await expect(still.locator('.product-card[data-product-id="glass-carafe"] .in-carts')).toHaveText('in 2 carts');
  await expect(still.locator('.online')).toHaveText('2 shoppers here');
  // The second shopper leaves: the count follows.
  await second.close();
  await expect(one.locator('.online')).toHaveText('1 shopper here');
  expect(watched.errors).toEqual([]);
  await plain.close();
  await first.close();
});
