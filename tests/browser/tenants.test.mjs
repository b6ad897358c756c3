// Tenants in the UI: a token that may read two tenants gets a picker in the top bar; the
// trace pages show only the chosen tenant's data. Started by
// `crates/strand-server/tests/web_ui.rs` against a strand with tenants `acme` and `globex`,
// one trace each (STRAND_ACME_TRACE, STRAND_GLOBEX_TRACE) and a read token for both.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage } from './lib.mjs';

const BASE = process.env.STRAND_URL;
const TOKEN = process.env.STRAND_TOKEN;
const ACME = process.env.STRAND_ACME_TRACE;
const GLOBEX = process.env.STRAND_GLOBEX_TRACE;
assert.ok(BASE && TOKEN && ACME && GLOBEX, 'STRAND_URL, STRAND_TOKEN and both traces must be set');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('the tenant picker switches whose traces the UI reads', async () => {
  const page = await newPage(browser);
  const tenants = [];
  page.on('request', (r) => { if (r.url().includes('/api/v1/traces/')) tenants.push(r.headers()['x-scope-orgid']); });
  await page.goto(`${BASE}/trace/${ACME}`);
  await page.locator('dialog.token-dialog input').fill(TOKEN);
  await page.locator('dialog.token-dialog button[value=ok]').click();
  await page.waitForSelector(`body[data-trace-ready="${ACME}"]`);
  const picker = page.locator('select#tenant');
  assert.deepEqual(await picker.locator('option').allTextContents(), ['acme', 'globex']);
  assert.equal(await picker.inputValue(), 'acme');
  assert.deepEqual(tenants, ['acme']);
  // globex does not have acme's trace.
  await Promise.all([page.waitForEvent('load'), picker.selectOption('globex')]);
  await page.waitForSelector('.notice');
  assert.match(await page.textContent('.notice'), /Trace not found/);
  assert.equal(await page.locator('select#tenant').inputValue(), 'globex');
  await page.goto(`${BASE}/trace/${GLOBEX}`);
  await page.waitForSelector(`body[data-trace-ready="${GLOBEX}"]`);
  assert.deepEqual(tenants.slice(-2), ['globex', 'globex']);
  assert.deepEqual(page.problems.filter((p) => !/40[14]/.test(p)), [], 'the page logged errors');
  await page.context().close();
});
