// A trace over the server's span cap (`query.max_trace_spans`) shows its earliest spans and
// says it was cut. Started by `crates/strand-server/tests/web_ui.rs` against a strand with
// `query.max_trace_spans: 2` holding one five-span trace; its id is in STRAND_TRACE.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage } from './lib.mjs';

const BASE = process.env.STRAND_URL;
const TRACE = process.env.STRAND_TRACE;
assert.ok(BASE && TRACE, 'STRAND_URL and STRAND_TRACE must name a running strand and a trace');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('a trace cut to the span cap says so above its spans', async () => {
  const page = await newPage(browser);
  await page.goto(`${BASE}/trace/${TRACE}`);
  await page.waitForSelector(`body[data-trace-ready="${TRACE}"]`);
  assert.equal(await page.locator('.row').count(), 2, 'the earliest two spans');
  const notice = await page.textContent('.notice');
  assert.ok(notice.includes('Trace cut short'), notice);
  assert.ok(notice.includes('this trace has 5 spans; the response holds the first 2'), notice);
  assert.deepEqual(page.problems, [], 'the page logged errors');
  await page.context().close();
});
