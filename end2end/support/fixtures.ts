// Fixtures: one server per test file (worker), a page that records console errors, page errors, WebSockets
// and loaded WASM bundles, so every test can assert that nothing went wrong behind the scenes.
import { test as base, expect, Page, WebSocket } from '@playwright/test';
import { ShopServer } from './server';

export type Watched = {
  errors: string[];
  sockets: WebSocket[];
  wasm: string[];
};

export function watch(page: Page): Watched {
  const watched: Watched = { errors: [], sockets: [], wasm: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') watched.errors.push(msg.text());
  });
  page.on('pageerror', (err) => watched.errors.push(String(err)));
  page.on('websocket', (ws) => watched.sockets.push(ws));
  page.on('response', (r) => {
    if (r.url().endsWith('.wasm')) watched.wasm.push(r.url());
  });
  return watched;
}

/** The badge count, the cart's total in cents (null while no total is shown), and its lines as `id → quantity`,
 *  read from the page. */
export async function cartOnPage(page: Page): Promise<{ badge: string; total: string | null; lines: Record<string, string> }> {
  return page.evaluate(() => {
    const lines: Record<string, string> = {};
    document.querySelectorAll('.cart-line').forEach((li) => {
      lines[(li as HTMLElement).dataset.productId!] = (li.querySelector('.line-quantity') as HTMLInputElement).value;
    });
    const total = document.querySelector('.shopping-cart .total');
    return {
      badge: document.querySelector('.cart-count')!.textContent!.trim(),
      total: total && !total.closest('[hidden]') ? total.getAttribute('data-total-cents') : null,
      lines,
    };
  });
}

/** Add `quantity` of a product through the page's own form. */
export async function addFromPage(page: Page, id: string, quantity = 1): Promise<void> {
  const card = page.locator(`.product-card[data-product-id="${id}"]`);
  await card.locator('input.quantity').fill(String(quantity));
  await card.locator('button[type=submit]').click();
}

/** Wait until all three bundles are hydrated and live (each has its own open socket). */
export async function expectLive(page: Page): Promise<void> {
  await expect(page.locator('.product-list')).toHaveAttribute('data-link', 'live');
  await expect(page.locator('.shopping-cart')).toHaveAttribute('data-link', 'live');
  await expect(page.locator('.connection tr[data-mfe="shell"]')).toHaveAttribute('data-state', 'live');
}

/** `test` with one server per test file (worker), started with `args` (extra server flags). */
export function testWithServer(args: string[]) {
  return base.extend<{}, { server: ShopServer }>({
    server: [
      async ({}, use) => {
        const server = await ShopServer.start(args);
        await use(server);
        await server.dispose();
      },
      { scope: 'worker' },
    ],
    baseURL: async ({ server }, use) => use(server.url),
  });
}

export const test = testWithServer([]);

export { expect };
