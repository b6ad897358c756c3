// The first look in a browser: a `strand serve --demo` server (started by the Rust test
// `crates/strand-server/tests/demo_mode.rs`, address in STRAND_URL). From the home page a
// newcomer follows the demo banner to the featured submission and lands on its red span.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, artifacts } from './lib.mjs';

const BASE = process.env.STRAND_URL;
assert.ok(BASE, 'STRAND_URL must name a running strand --demo');
const shots = artifacts();

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('the home page leads to the demo trace and its red span', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/`);
  // The default search (last hour) lists the demo submissions; the banner points to one.
  await page.waitForSelector('.result');
  assert.equal(await page.locator('.result').count(), 7);
  assert.ok((await page.getAttribute('.demo-banner a.demo-broken', 'href')).startsWith('/trace/'));
  const link = page.locator('.demo-banner a.demo-link');
  await link.waitFor();
  assert.match(await page.textContent('.demo-banner'), /slow database query.*queue hop.*SMS attempt/);
  await page.screenshot({ path: `${shots}/demo-home.png` });
  await link.click();

  await page.waitForURL(/\/trace\/[0-9a-f]{8}de30de30[0-9a-f]{16}\?span=/);
  await page.waitForSelector('.row.selected');
  const selected = page.locator('.row.selected');
  assert.match(await selected.getAttribute('class'), /\berror\b/, 'the selected span is red');
  const detail = await page.textContent('aside.detail');
  assert.ok(detail.includes('503 Service Unavailable'), `the details say why: ${detail}`);
  assert.ok(detail.includes('notify-service'), detail);
  // The same trace has the queue hop and the slow query.
  const names = await page.$$eval('.row .op', (els) => els.map((e) => e.textContent));
  for (const name of ['send patient-report.submitted', 'process patient-report.submitted', 'SELECT reports', 'send-sms']) {
    assert.ok(names.includes(name), `${name} in ${names}`);
  }
  await page.screenshot({ path: `${shots}/demo-red-span.png` });
  assert.deepEqual(page.problems, [], 'the page logged errors');
  await page.context().close();
});
