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
  // Its log lines: the red span's ERROR line in its details, ticks on the bars, and the
  // whole trace's lines in the Logs panel, each able to jump to its span.
  const spanLogs = await page.textContent('aside.detail details.section:has(summary:text-matches("^Logs"))');
  assert.match(spanLogs, /ERROR.*sms gateway refused the message: 503 Service Unavailable/s, spanLogs);
  assert.match(spanLogs, /retry\.attempt=1/, spanLogs);
  assert.ok(await page.locator('.row.selected .log-mark.sev-error').count() >= 1, 'an error tick on the red span');
  await page.click('.trace-toolbar button:text-matches("^Logs")');
  const panel = page.locator('#trace-logs');
  await panel.locator('table.logs tr').first().waitFor();
  const rows = await panel.locator('table.logs tr').allTextContents();
  assert.equal(rows.length, 8, rows.join('\n'));
  assert.ok(rows.some((r) => /WARN.*slow query: SELECT reports took/.test(r)), rows.join('\n'));
  await panel.locator('tr:has-text("slow query") button').click();
  await page.waitForFunction(() => document.querySelector('.row.selected .op')?.textContent === 'SELECT reports');
  await page.screenshot({ path: `${shots}/demo-logs.png` });
  assert.deepEqual(page.problems, [], 'the page logged errors');
  await page.context().close();
});

test('the Logs page finds a line and leads to its span', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/logs?q=refused&severity=ERROR`);
  await page.waitForFunction(() => document.body.dataset.logsReady !== undefined);
  const rows = await page.locator('table.logs tr').allTextContents();
  assert.equal(rows.length, 1, rows.join('\n'));
  assert.match(rows[0], /ERROR.*notify-service.*sms gateway refused the message/);
  await page.click('table.logs tr a.log-trace');
  await page.waitForURL(/\/trace\/[0-9a-f]{8}de30de30[0-9a-f]{16}\?span=d004/);
  await page.waitForSelector('.row.selected.error');
  // A search nothing matches says so.
  await page.goto(`${BASE}/logs?q=no-such-line`);
  await page.waitForSelector('.notice-empty');
  assert.deepEqual(page.problems, [], 'the page logged errors');
  await page.context().close();
});
