// A server that requires tokens: the UI asks for one on the first 401, keeps it for the tab
// only (sessionStorage), sends it with every API call, and asks again when it is refused.
// Started by `crates/strand-server/tests/web_ui.rs` against a strand with one `read` token
// (STRAND_TOKEN) holding one trace (STRAND_TRACE).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage } from './lib.mjs';

const BASE = process.env.STRAND_URL;
const TOKEN = process.env.STRAND_TOKEN;
const TRACE = process.env.STRAND_TRACE;
assert.ok(BASE && TOKEN && TRACE, 'STRAND_URL, STRAND_TOKEN and STRAND_TRACE must be set');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Chromium logs every 401 answer as a console error; those are expected here. */
const unexpected = (page) => page.problems.filter((p) => !p.includes('401'));

test('the UI asks for a token, keeps it for the tab and reads with it', async () => {
  const page = await newPage(browser);
  const sent = [];
  page.on('request', (r) => { if (r.url().includes('/api/')) sent.push(r.headers().authorization ?? null); });
  await page.goto(`${BASE}/trace/${TRACE}`);
  const dialog = page.locator('dialog.token-dialog');
  await dialog.waitFor();
  assert.match(await dialog.textContent(), /requires a token/);
  // A wrong token is refused and asked for again, with the server's reason.
  await dialog.locator('input').fill('strand_wrong');
  await dialog.locator('button[value=ok]').click();
  await page.waitForFunction(() => document.querySelector('dialog.token-dialog .token-reason')?.textContent.includes('not valid'));
  await page.locator('dialog.token-dialog input').fill(TOKEN);
  await page.locator('dialog.token-dialog button[value=ok]').click();
  await page.waitForSelector(`body[data-trace-ready="${TRACE}"]`);
  assert.ok(await page.locator('.row').count() > 0, 'the trace shows');
  assert.ok(sent.includes(`Bearer ${TOKEN}`), 'the token went with the API calls');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('strand.token')), TOKEN);
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing kept beyond the tab');
  assert.equal((await page.context().cookies()).length, 0, 'no cookie');
  // The trace's JSON link sends the token too (a plain link could not): a new tab shows it.
  const [tab] = await Promise.all([page.context().waitForEvent('page'), page.click('.trace-id a:text("JSON")')]);
  await tab.waitForFunction((id) => document.body?.innerText.includes(id), TRACE);
  assert.match(await tab.evaluate(() => document.body.innerText), /"resourceSpans"/);
  await tab.close();
  // Loading the page again in the same tab reads without asking again.
  await page.goto(`${BASE}/trace/${TRACE}`);
  await page.waitForSelector(`body[data-trace-ready="${TRACE}"]`);
  assert.equal(await page.locator('dialog.token-dialog').count(), 0);
  assert.deepEqual(unexpected(page), [], 'the page logged errors');
  await page.context().close();
});
