// Chain integrity in the UI, in headless Chromium. Started by the Rust test
// `crates/strand-server/tests/chain_integrity.rs`, which sends labelled submissions (a
// complete one, a queue hop that lost its context, an SMS task spawned without it, a lost
// span) and waits until they have settled. Ids come in the environment.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, artifacts } from './lib.mjs';

const BASE = process.env.STRAND_URL;
const { PRODUCER_TRACE, CONSUMER_TRACE, TASK_TRACE, REQUEST_TRACE, DETACHED_TRACE } = process.env;
assert.ok(BASE && PRODUCER_TRACE && CONSUMER_TRACE && TASK_TRACE && REQUEST_TRACE && DETACHED_TRACE);
const shots = artifacts();

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function open(path) {
  const page = await newPage(browser);
  await page.goto(`${BASE}${path}`);
  return page;
}

async function done(page, shot) {
  if (shot) await page.screenshot({ path: `${shots}/${shot}.png` });
  assert.deepEqual(page.problems, [], 'the page logged errors');
  await page.context().close();
}

test('the search filters broken chains and marks them', async () => {
  const page = await open('/search');
  await page.waitForSelector('.result');
  await page.selectOption('select[name=integrity]', 'broken');
  await page.click('button[type=submit]');
  await page.waitForURL(/integrity=broken/);
  await page.waitForFunction(() => document.querySelectorAll('.result').length === 4);
  const ids = await page.$$eval('.result', (els) => els.map((e) => e.dataset.traceId).sort());
  assert.deepEqual(ids, [PRODUCER_TRACE, CONSUMER_TRACE, TASK_TRACE, DETACHED_TRACE].sort());
  assert.equal(await page.locator('.result .chip-chain').count(), 4);
  // One kind at a time.
  await page.goto(`${BASE}/search?integrity=consumer_new_root`);
  await page.waitForFunction(() => document.querySelectorAll('.result').length === 1);
  assert.equal(await page.getAttribute('.result', 'data-trace-id'), CONSUMER_TRACE);
  assert.equal(await page.inputValue('select[name=integrity]'), 'consumer_new_root');
  await done(page, 'integrity-search');
});

test('a broken trace shows its findings and leads to the other half', async () => {
  const page = await open(`/trace/${PRODUCER_TRACE}`);
  const banner = page.locator('.integrity-banner.broken');
  await banner.waitFor();
  const text = await banner.textContent();
  assert.match(text, /Broken chain: 1 finding/);
  assert.match(text, /Producer without consumer data-service → notify-service/);
  assert.match(text, /the context was lost on the queue hop/);
  assert.match(await page.textContent('.facts'), /Chainbroken/);
  // Show span: the producer span, marked in the waterfall.
  await banner.getByRole('button', { name: 'Show span' }).click();
  const selected = page.locator('.row.selected');
  await selected.waitFor();
  assert.match(await selected.textContent(), /send patient-report\.submitted/);
  assert.match(await selected.locator('.chain-badge').textContent(), /producer_without_consumer/);
  assert.match(await page.textContent('aside.detail'), /Chain integrity \(1\)/);
  await page.screenshot({ path: `${shots}/integrity-trace.png` });
  // The other half: the consumer's new trace, its span selected, naming this one back.
  await banner.locator('a.related').click();
  await page.waitForURL(new RegExp(`/trace/${CONSUMER_TRACE}\\?span=`));
  const back = page.locator('.integrity-banner');
  await back.waitFor();
  assert.match(await back.textContent(), /Consumer started a new trace/);
  assert.ok((await back.locator('a.related').getAttribute('href')).startsWith(`/trace/${PRODUCER_TRACE}?span=`));
  await page.waitForSelector('.row.selected');
  assert.match(await page.textContent('.row.selected'), /process patient-report\.submitted/);
  await done(page);
});

test('work spawned without the request names the likely request; a detached subtree is drawn as such', async () => {
  const page = await open(`/trace/${TASK_TRACE}`);
  const banner = page.locator('.integrity-banner');
  await banner.waitFor();
  assert.match(await banner.textContent(), /Work without a request/);
  assert.match(await banner.textContent(), /low confidence/);
  assert.equal(await banner.locator('a.related').first().getAttribute('href'), `/trace/${REQUEST_TRACE}`);
  await page.goto(`${BASE}/trace/${DETACHED_TRACE}`);
  await page.waitForSelector('.integrity-banner');
  assert.match(await page.textContent('.integrity-banner'), /Missing parent/);
  const detached = page.locator('.row .detached-badge');
  assert.equal(await detached.count(), 1);
  assert.match(await detached.getAttribute('title'), /is not in this trace/);
  await done(page, 'integrity-detached');
});

test('a complete trace says its chain is whole', async () => {
  const page = await open(`/trace/${REQUEST_TRACE}`);
  await page.waitForSelector('.facts');
  assert.match(await page.textContent('.facts'), /Chainwhole/);
  assert.equal(await page.locator('.integrity-banner').count(), 0);
  await done(page);
});

test('the service map marks the edge whose context was lost', async () => {
  const page = await open('/dependencies?lookback=1h');
  await page.waitForSelector('svg.map');
  const edge = page.locator('.map .edge-broken[data-parent="data-service"][data-child="notify-service"]');
  assert.equal(await edge.count(), 1);
  assert.equal(await edge.getAttribute('data-lost'), '1');
  const row = page.locator('table.edges tr[data-parent="data-service"][data-child="notify-service"] td.lost');
  assert.equal(await row.textContent(), '1 (25%)');
  assert.equal(await page.locator('.map .edge-broken').count(), 1, 'only that edge lost context');
  await done(page, 'integrity-map');
});
