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

/** Wait until all three bundles are hydrated and live (each has its own open socket). */
export async function expectLive(page: Page): Promise<void> {
  await expect(page.locator('.product-list')).toHaveAttribute('data-link', 'live');
  await expect(page.locator('.shopping-cart')).toHaveAttribute('data-link', 'live');
  await expect(page.locator('.connection tr[data-mfe="shell"]')).toHaveAttribute('data-state', 'live');
}

export const test = base.extend<{}, { server: ShopServer }>({
  server: [
    async ({}, use) => {
      const server = await ShopServer.start();
      await use(server);
      await server.dispose();
    },
    { scope: 'worker' },
  ],
  baseURL: async ({ server }, use) => use(server.url),
});

export { expect };
