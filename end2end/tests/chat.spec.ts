// The help chat in the browser: the example bot connected as a service, a shopper asks in the Help panel and
// the answer arrives in every tab of the session; with no service connected the page says so, the question
// waits and is answered when one connects; the conversation is there again after a reload.
import { testWithServer, expect, expectLive, watch } from '../support/fixtures';
import { ShopServer } from '../support/server';
import { HelpBot } from '../support/bot';
import { RedisServer } from '../support/redis';

const TOKEN = 'helpdesk:chat:e2e-chat-token-0123456789';
const SECRET = 'e2e-chat-token-0123456789';

const test = testWithServer(['--service-token', TOKEN]);

async function ask(page: import('@playwright/test').Page, question: string): Promise<void> {
  const help = page.locator('details.help');
  if (!(await help.evaluate((d) => (d as HTMLDetailsElement).open))) await help.locator('summary').click();
  await page.locator('#help-text').fill(question);
  await page.getByRole('button', { name: 'Send' }).click();
}

test('a shopper asks, the bot answers, every tab shows it, and a reload shows the conversation', async ({ browser, server }) => {
  const bot = await HelpBot.start(server.url, SECRET);
  const context = await browser.newContext({ baseURL: server.url });
  const [one, two] = [await context.newPage(), await context.newPage()];
  const watched = watch(one);
  for (const page of [one, two]) {
    await page.goto('/');
    await expectLive(page);
  }
  await two.locator('details.help summary').click();
  const started = Date.now();
  await ask(one, 'Is the walnut lamp in stock?');
  const answer = 'The Walnut Desk Lamp is in stock, but only 3 left.';
  for (const page of [one, two]) {
    await expect(page.locator('.help-message[data-from="shopper"]')).toHaveText(['You: Is the walnut lamp in stock?']);
    await expect(page.locator('.help-message[data-from="service"]')).toHaveText([`Support: ${answer}`], { timeout: 1000 });
  }
  console.log(`help chat: the answer shown in both tabs ${Date.now() - started} ms after Send`);
  await expect(one.locator('.help-status')).toBeHidden();
  await one.screenshot({ path: test.info().outputPath('help-chat.png') });

  await one.reload();
  await expectLive(one);
  await one.locator('details.help summary').click();
  await expect(one.locator('.help-message')).toHaveText(['You: Is the walnut lamp in stock?', `Support: ${answer}`]);
  expect(watched.errors).toEqual([]);
  await bot.kill();
  await context.close();
});

test('with no service connected the page says so and the question is answered once one connects', async ({ browser, server }) => {
  const context = await browser.newContext({ baseURL: server.url });
  const page = await context.newPage();
  await page.goto('/');
  await expectLive(page);
  await page.locator('details.help summary').click();
  await expect(page.locator('.help-status')).toHaveText('Support is offline — we will answer here.');
  await ask(page, 'How much is the glass carafe?');
  await expect(page.locator('.help-message[data-from="shopper"]')).toHaveCount(1);
  const bot = await HelpBot.start(server.url, SECRET);
  await expect(page.locator('.help-message[data-from="service"]')).toHaveText(['Support: The Glass Carafe costs €26.00.']);
  await expect(page.locator('.help-status')).toBeHidden();
  await bot.kill();
  await context.close();
});

test("another shopper's page never shows this conversation", async ({ browser, server }) => {
  const bot = await HelpBot.start(server.url, SECRET);
  const [mine, theirs] = [await browser.newContext({ baseURL: server.url }), await browser.newContext({ baseURL: server.url })];
  const [me, them] = [await mine.newPage(), await theirs.newPage()];
  for (const page of [me, them]) {
    await page.goto('/');
    await expectLive(page);
  }
  await them.locator('details.help summary').click();
  await ask(me, 'Do you have brass pens?');
  await expect(me.locator('.help-message[data-from="service"]')).toHaveCount(1);
  // The other page asks too and gets only its own answer.
  await ask(them, 'Where is my parcel?');
  await expect(them.locator('.help-message[data-from="service"]')).toHaveCount(1);
  await expect(them.locator('.help-message')).not.toContainText(['You: Do you have brass pens?']);
  await expect(them.locator('.help-messages')).not.toContainText('Brass Pen');
  await bot.kill();
  await mine.close();
  await theirs.close();
});

test('the shopper on one instance and the bot on another, through Redis: every tab has the answer within a second', async ({ browser }) => {
  const redis = await RedisServer.start();
  const flags = ['--redis-url', redis.url, '--service-token', TOKEN];
  const [one, two] = [await ShopServer.start(flags), await ShopServer.start(flags)];
  const bot = await HelpBot.start(two.url, SECRET);
  const context = await browser.newContext();
  const [a, b] = [await context.newPage(), await context.newPage()];
  await a.goto(one.url);
  await b.goto(two.url);
  for (const page of [a, b]) await expectLive(page);
  await b.locator('details.help summary').click();
  const started = Date.now();
  await ask(a, 'Is the wool throw in stock?');
  const answer = 'Support: The Wool Throw is in stock, but only 1 left.';
  for (const page of [a, b]) {
    await expect(page.locator('.help-message[data-from="service"]')).toHaveText([answer], { timeout: 1000 });
  }
  console.log(`help chat across two instances: the answer shown in both tabs ${Date.now() - started} ms after Send`);
  await bot.kill();
  await context.close();
  await one.dispose();
  await two.dispose();
  await redis.dispose();
});
