// REST when the network or the server misbehaves: a busy server's Retry-After is honoured, a change whose answer
// never comes is said to be unconfirmed (in words, within seconds) and is applied once however often it is
// tried again, and taps during a slow answer are queued into one change instead of being swallowed.
import { test, expect, expectLive, addFromPage, watch } from '../support/fixtures';
import { ShopServer } from '../support/server';
import type { APIRequestContext } from '@playwright/test';

/** Chromium logs every 5xx answer and every aborted fetch as a console error; those are the faults injected. */
const injected = (e: string) => /Failed to load resource|net::ERR_/.test(e);

async function quantityOf(request: APIRequestContext, id: string): Promise<number> {
  const cart = await (await request.get('/api/cart')).json();
  return cart.items.find((l: { product_id: string }) => l.product_id === id)?.quantity ?? 0;
}

test('a 503 with Retry-After: 2 is retried no sooner than 2 s later, with the same key, and adds once', async ({ browser }) => {
  const server = await ShopServer.start();
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    const watched = watch(page);
    await page.goto('/');
    await expectLive(page);
    const posts: { at: number; key: string | undefined }[] = [];
    await page.route('**/api/cart', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      posts.push({ at: Date.now(), key: route.request().headers()['idempotency-key'] });
      if (posts.length === 1) {
        return route.fulfill({
          status: 503,
          headers: { 'retry-after': '2' },
          contentType: 'application/json',
          body: JSON.stringify({ error: { code: 'service_unavailable', message: 'The shop is busy.' } }),
        });
      }
      return route.fallback();
    });
    await addFromPage(page, 'cork-coasters');
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('1', { timeout: 8000 });
    expect(posts).toHaveLength(2);
    const waited = posts[1].at - posts[0].at;
    console.log(`Retry-After: 2 → the retry came ${waited} ms later`);
    expect(waited).toBeGreaterThanOrEqual(2000);
    expect(waited).toBeLessThan(3000);
    expect(posts[1].key).toBe(posts[0].key);
    expect(await quantityOf(context.request, 'cork-coasters')).toBe(1);
    await expect(page.locator('.product-card[data-product-id="cork-coasters"] .error')).toHaveText('');
    expect(watched.errors.filter((e) => !injected(e))).toEqual([]);
    await context.close();
  } finally {
    await server.dispose();
  }
});

test('a change whose answer never comes is said to be unconfirmed, shown as the shop has it, and tried again adds once', async ({ browser }) => {
  const server = await ShopServer.start(['--link-request-timeout-ms', '1500']);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    const watched = watch(page);
    await page.goto('/');
    await expectLive(page);
    // The server gets every POST and commits it; its answers never reach the page (a proxy or network that
    // drops the way back).
    let drop = true;
    const keys: (string | undefined)[] = [];
    await page.route('**/api/cart', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      keys.push(route.request().headers()['idempotency-key']);
      if (!drop) return route.fallback();
      await route.fetch().catch(() => undefined);
      // Never fulfilled: the page's request timeout aborts it.
    });
    const error = page.locator('.product-card[data-product-id="cork-coasters"] .error');
    const started = Date.now();
    await addFromPage(page, 'cork-coasters');
    await expect(error).toHaveText('Not confirmed yet — checking…', { timeout: 15_000 });
    console.log(`no answer: "Not confirmed yet — checking…" after ${Date.now() - started} ms (request timeout 1.5 s)`);
    await expect(error).toHaveText(/^Not confirmed\. .*will not apply it twice/, { timeout: 15_000 });
    console.log(`no answer: settled after ${Date.now() - started} ms, ${keys.length} attempts`);
    // The cart was read again: it shows what the shop has (the change did land).
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('1');
    expect(keys.length).toBe(4);
    expect(new Set(keys).size).toBe(1);

    // The shopper tries the same change again: the same key, so the shop answers it from the first.
    drop = false;
    await addFromPage(page, 'cork-coasters');
    await expect(error).toHaveText('');
    await expect.poll(() => keys.length).toBe(5);
    expect(keys[4]).toBe(keys[0]);
    expect(await quantityOf(context.request, 'cork-coasters')).toBe(1);
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('1');

    // A new change after that is a new key, and adds.
    await addFromPage(page, 'cork-coasters');
    await expect(page.locator('.cart-line[data-product-id="cork-coasters"] .line-quantity')).toHaveValue('2');
    expect(keys[5]).not.toBe(keys[0]);
    expect(watched.errors.filter((e) => !injected(e))).toEqual([]);
    await context.close();
  } finally {
    await server.dispose();
  }
});

test('taps during a slow answer are queued: "+" three times 100 ms apart ends at +3, as one follow-up change', async ({ browser }) => {
  const server = await ShopServer.start();
  try {
    const context = await browser.newContext({ baseURL: server.url });
    expect((await context.request.post('/api/cart', { data: { product_id: 'cork-coasters', quantity: 1 } })).status()).toBe(200);
    const page = await context.newPage();
    const watched = watch(page);
    await page.goto('/');
    await expectLive(page);
    const deltas: number[] = [];
    await page.route('**/api/cart/items/**', async (route) => {
      if (route.request().method() === 'PATCH') {
        deltas.push(JSON.parse(route.request().postData() ?? '{}').delta);
        await new Promise((resolve) => setTimeout(resolve, 400)); // the slow network under test
      }
      return route.fallback();
    });
    const line = page.locator('.cart-line[data-product-id="cork-coasters"]');
    const plus = line.locator('button.step').nth(1);
    // Three taps 100 ms apart, timed in the page itself (Playwright's own round trips would stretch them).
    await plus.evaluate((button: HTMLButtonElement) => new Promise<void>((done) => {
      let taps = 0;
      const tap = () => {
        button.click();
        if (++taps < 3) setTimeout(tap, 100);
        else done();
      };
      tap();
    }));
    // While the first answer is still out, the row shows what was asked for and says it is busy.
    await expect.poll(() => line.evaluate((li) => [
      li.querySelector('.stepper')!.getAttribute('aria-busy'),
      (li.querySelector('.line-quantity') as HTMLInputElement).value,
    ])).toEqual(['true', '4']);
    await expect(line.locator('.stepper')).toHaveAttribute('aria-busy', 'false', { timeout: 5000 });
    await expect(line.locator('.line-quantity')).toHaveValue('4');
    expect(await quantityOf(context.request, 'cork-coasters')).toBe(4);
    expect(deltas).toEqual([1, 2]);
    expect(watched.errors).toEqual([]);
    await context.close();
  } finally {
    await server.dispose();
  }
});
