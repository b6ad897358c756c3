// Browser tests of Strand's web UI in headless Chromium. Started by the Rust test
// `crates/strand-server/tests/web_ui.rs`, which runs a real `strand` loaded with
// `testdata/ui/*.json` (shifted to ten minutes ago) and `testdata/otlp/trace.json`, and
// passes its address in STRAND_URL. Screenshots go to test-artifacts/ui/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, newPage, artifacts } from './lib.mjs';

const BASE = process.env.STRAND_URL;
assert.ok(BASE, 'STRAND_URL must name a running strand');
const REPORT = '5eed0000000000000000000000000001';
const SLOW = '5eed0000000000000000000000000002';
const XSS = '5eed0000000000000000000000000003';
const OTLP_EXAMPLE = '5b8efff798038103d269b633813fc60c';
const shots = artifacts();

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Opens `path` in a fresh page; fails the test on any page or console error. */
async function open(path, options) {
  const page = await newPage(browser, options);
  await page.goto(`${BASE}${path}`);
  return page;
}

async function done(page, shot) {
  if (shot) await page.screenshot({ path: `${shots}/${shot}.png` });
  assert.deepEqual(page.problems, [], 'the page logged errors');
  await page.context().close();
}

const resultIds = (page) => page.$$eval('.result', (els) => els.map((e) => e.dataset.traceId));
const rowNames = (page, sel = '.row') => page.$$eval(sel, (els) => els.map((e) => e.querySelector('.op').textContent));

test('search lists the recent traces with a scatter plot', async () => {
  const page = await open('/search');
  await page.waitForSelector('.result');
  assert.deepEqual((await resultIds(page)).sort(), [REPORT, SLOW, XSS]);
  assert.equal(await page.locator('.scatter circle').count(), 3);
  const first = page.locator(`.result[data-trace-id="${REPORT}"]`);
  assert.match(await first.textContent(), /gateway: POST \/reports/);
  assert.match(await first.textContent(), /7 spans/);
  assert.match(await first.textContent(), /1 error/);
  await done(page, 'search');
});

test('filters narrow the results, live in the URL, and the back button restores them', async () => {
  const page = await open('/search?service=data-service');
  await page.waitForSelector('.result');
  assert.deepEqual((await resultIds(page)).sort(), [REPORT, SLOW]);
  await page.check('input[name=errors]');
  await page.click('button[type=submit]');
  await page.waitForURL(/errors=true/);
  await page.waitForFunction(() => document.querySelectorAll('.result').length === 1);
  assert.deepEqual(await resultIds(page), [REPORT]);
  await page.goBack();
  await page.waitForFunction(() => document.querySelectorAll('.result').length === 2);
  assert.equal(await page.isChecked('input[name=errors]'), false);
  // An attribute filter that holds on no span of data-service.
  await page.fill('input[name=tags]', 'db.system.name=postgresql');
  await page.click('button[type=submit]');
  await page.waitForSelector('.notice');
  assert.match(await page.textContent('.notice'), /No traces found/);
  await done(page);
});

test('Jaeger UI search links keep working (error tag → errors only)', async () => {
  const tags = encodeURIComponent(JSON.stringify({ error: 'true' }));
  const page = await open(`/search?service=data-service&tags=${tags}&lookback=1h&limit=20`);
  await page.waitForSelector('.result');
  assert.deepEqual(await resultIds(page), [REPORT]);
  assert.equal(await page.isChecked('input[name=errors]'), true);
  await done(page);
});

test('autocomplete offers services, operations, attribute names and values from the API', async () => {
  const page = await open('/search');
  await page.waitForSelector('.result');
  const options = () => page.$$eval('.ac-list:not([hidden]) li', (els) => els.map((e) => e.textContent));
  await page.click('input[name=service]');
  await page.keyboard.type('data');
  // The list first opens with every service and narrows as the typing is seen: wait for
  // it to narrow (a busy machine showed the unfiltered list to an immediate check).
  await page.waitForFunction(() => {
    const items = [...document.querySelectorAll('.ac-list:not([hidden]) li')];
    return items.length > 0 && items.every((li) => li.textContent.includes('data'));
  });
  assert.deepEqual(await options(), ['data-service']);
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  assert.equal(await page.inputValue('input[name=service]'), 'data-service');
  await page.click('input[name=operation]');
  await page.waitForSelector('.ac-list:not([hidden]) li');
  assert.deepEqual((await options()).sort(), ['INSERT reports', 'SELECT patients', 'retry INSERT reports']);
  await page.keyboard.press('Escape');
  await page.click('input[name=tags]');
  await page.keyboard.type('db.sys');
  await page.waitForFunction(() => [...document.querySelectorAll('.ac-list:not([hidden]) li')]
    .some((li) => li.textContent === 'db.system.name='));
  await page.click('.ac-list:not([hidden]) li:text-is("db.system.name=")');
  await page.waitForFunction(() => [...document.querySelectorAll('.ac-list:not([hidden]) li')]
    .some((li) => li.textContent === 'db.system.name=sqlite'));
  await done(page);
});

test('trace view shows every span, the error in red and the hand-computed critical path', async () => {
  const page = await open(`/trace/${REPORT}`);
  await page.waitForSelector(`body[data-trace-ready="${REPORT}"]`);
  assert.deepEqual(await rowNames(page), ['POST /reports', 'GET /patients/{id}', 'epro.Reports/Submit',
    'INSERT reports', 'SELECT patients', 'audit', 'send-sms']);
  assert.deepEqual(await rowNames(page, '.row.error'), ['INSERT reports']);
  const [barColor, errorColor] = await page.evaluate(() => [
    getComputedStyle(document.querySelector('.row.error .bar')).backgroundColor,
    getComputedStyle(document.querySelector('.row.error .errors, .facts .errors dd')).color]);
  assert.equal(barColor, errorColor, 'the error bar has the error colour');
  // The async send-sms outlives the request and decides when the trace ends; audit and
  // INSERT overlap work that ended later, so they are off the path.
  assert.deepEqual((await rowNames(page, '.row.critical')).sort(),
    ['GET /patients/{id}', 'POST /reports', 'SELECT patients', 'epro.Reports/Submit', 'send-sms']);
  const header = await page.textContent('.trace-header');
  for (const fact of ['Duration150ms', 'Services5', 'Depth3', 'Spans7', 'Errors1']) assert.ok(header.includes(fact), `${fact} in ${header}`);
  await done(page, 'trace');
});

test('span details, keyboard navigation, folding and span links', async () => {
  const page = await open(`/trace/${REPORT}`);
  await page.waitForSelector(`body[data-trace-ready="${REPORT}"]`);
  await page.click('.row[data-span-id="d000000000000001"]');
  const detail = page.locator('aside.detail');
  await detail.waitFor();
  const text = await detail.textContent();
  for (const s of ['INSERT reports', 'd000000000000001', 'Error: UNIQUE constraint failed: reports.id',
    'db.query.text', 'INSERT INTO reports VALUES (?)', 'Resource attributes (1)', 'strand-ui-fixture 1.0',
    'exception', 'rusqlite::Error']) {
    assert.ok(text.includes(s), `details lack ${s}`);
  }
  assert.match(page.url(), /span=d000000000000001/);
  await page.keyboard.press('ArrowDown');
  assert.equal(await page.getAttribute('.row.selected', 'data-span-id'), 'd000000000000002');
  await page.keyboard.press('ArrowLeft'); // a leaf: to its parent
  assert.equal(await page.getAttribute('.row.selected', 'data-span-id'), 'c000000000000001');
  await page.keyboard.press('ArrowLeft'); // fold it
  assert.equal(await page.locator('.row').count(), 5);
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.locator('.row').count(), 7);
  await page.keyboard.press('Escape');
  assert.equal(await detail.isHidden(), true);
  // send-sms links to the epro span: following the link selects it.
  await page.click('.row[data-span-id="e000000000000001"] .link-badge');
  assert.equal(await page.getAttribute('.row.selected', 'data-span-id'), 'c000000000000001');
  await page.fill('.trace-toolbar input[type=search]', 'sqlite');
  await page.waitForFunction(() => document.querySelectorAll('.row.match').length === 2);
  await done(page, 'trace-detail');
});

test('the official OTLP example trace opens by its id', async () => {
  const page = await open(`/trace/${OTLP_EXAMPLE.toUpperCase()}`);
  await page.waitForSelector(`body[data-trace-ready="${OTLP_EXAMPLE}"]`);
  assert.deepEqual(await rowNames(page), ["I'm a server span"]);
  await page.click('.row');
  assert.ok((await page.textContent('aside.detail')).includes('my.span.attr'));
  await done(page);
});

test('the name column is resized by dragging its edge or with the arrow keys, and remembered', async () => {
  let page = await open(`/trace/${REPORT}`);
  await page.waitForSelector(`body[data-trace-ready="${REPORT}"]`);
  const nameWidth = () => page.$eval('.row .name-col', (el) => el.getBoundingClientRect().width);
  const before = await nameWidth();
  const handle = await page.locator('.col-resizer').boundingBox();
  const [x, y] = [handle.x + handle.width / 2, handle.y + handle.height / 2];
  await page.mouse.move(x, y);
  await page.mouse.down();
  await page.mouse.move(x + 150, y, { steps: 5 });
  await page.mouse.up();
  const dragged = await nameWidth();
  assert.ok(Math.abs(dragged - before - 150) <= 4, `dragged ${before} → ${dragged}`);
  await page.focus('.col-resizer');
  await page.keyboard.press('ArrowLeft');
  const keyed = await nameWidth();
  assert.ok(Math.abs(dragged - keyed - 24) <= 2, `ArrowLeft ${dragged} → ${keyed}`);
  // The same browser profile opens the next trace with the chosen width.
  await page.goto(`${BASE}/trace/${SLOW}`);
  await page.waitForSelector(`body[data-trace-ready="${SLOW}"]`);
  assert.ok(Math.abs((await nameWidth()) - keyed) <= 2, 'the width is remembered');
  await done(page, 'trace-resized');
});

test('service map shows the edges with call and error counts; a service leads to its search', async () => {
  const page = await open('/dependencies');
  await page.waitForSelector('.map .node');
  const edges = await page.$$eval('table.edges tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent).join(' ')));
  // Caller, callee, calls, errors, calls whose context was lost (the fixtures lose none; the
  // fixtures' traces have not settled, so no outcome is counted yet either).
  assert.deepEqual(edges.sort(), ['epro-service data-service 4 1 0', 'gateway epro-service 3 0 0',
    'gateway notify-service 2 0 0', 'gateway user-service 2 0 0']);
  assert.equal(await page.locator('.map .edge-error').count(), 1);
  assert.equal(await page.getAttribute('.map .edge-error', 'data-child'), 'data-service');
  // Edge labels sit above every edge line and apart from each other and the boxes.
  const boxes = await page.$$eval('.map .edge-label, .map .node rect', (els) => els.map((el) => {
    const r = el.getBoundingClientRect();
    return { label: el.classList.contains('edge-label'), l: r.left, r: r.right, t: r.top, b: r.bottom };
  }));
  const overlap = (a, b) => a.l < b.r && b.l < a.r && a.t < b.b && b.t < a.b;
  const labels = boxes.filter((b) => b.label);
  assert.equal(labels.length, 4);
  for (const a of labels) {
    for (const b of boxes) {
      if (a !== b) assert.ok(!overlap(a, b), `an edge label overlaps ${b.label ? 'another label' : 'a service box'}`);
    }
  }
  const order = await page.$$eval('svg.map > *', (els) => els.map((e) => e.classList.contains('edge-label') ? 'label' : e.classList.contains('edge') || e.classList.contains('edge-error') ? 'edge' : 'other'));
  assert.ok(order.includes('edge') && order.lastIndexOf('edge') < order.indexOf('label'),
    `every label is drawn after every edge line: ${order}`);
  await page.screenshot({ path: `${shots}/service-map.png` });
  await page.click('.map .node[data-service="data-service"]');
  await page.waitForURL(/\/search\?service=data-service/);
  await page.waitForSelector('.result');
  assert.deepEqual((await resultIds(page)).sort(), [REPORT, SLOW]);
  await done(page);
});

test('an empty service-map range offers all time, which shows the edges', async () => {
  // 1970: no edges then.
  const page = await open('/dependencies?start=0&end=1000000000');
  await page.waitForSelector('.all-time');
  assert.match(await page.textContent('.notice'), /No dependencies in this range[\s\S]*There are 4 at other times/);
  await page.click('.all-time');
  await page.waitForURL(/lookback=all/);
  await page.waitForSelector('.map .node');
  assert.equal(await page.locator('table.edges tbody tr').count(), 4);
  assert.equal(await page.inputValue('select'), 'all');
  await done(page);
});

test('compare lists the known differences', async () => {
  const page = await open(`/trace/${REPORT}...${SLOW}`);
  await page.waitForSelector('.compare-table tbody tr');
  const changes = Object.fromEntries(await page.$$eval('.compare-table tbody tr',
    (rows) => rows.map((r) => [r.querySelector('.op').textContent, r.dataset.change])));
  assert.deepEqual(changes, {
    'POST /reports': 'slower', 'epro.Reports/Submit': 'slower', 'INSERT reports': 'missing',
    'SELECT patients': 'slower', 'retry INSERT reports': 'added', audit: 'missing', 'send-sms': 'faster',
  });
  await done(page, 'compare');
});

test('search results pick two traces to compare', async () => {
  const page = await open('/search?service=data-service');
  await page.waitForSelector('.result');
  await page.check(`.result[data-trace-id="${REPORT}"] input[type=checkbox]`);
  await page.check(`.result[data-trace-id="${SLOW}"] input[type=checkbox]`);
  await page.click('button:text("Compare selected")');
  await page.waitForSelector('.compare-table tbody tr');
  assert.match(page.url(), /\/trace\/5eed0+\d\.\.\.5eed0+\d$/);
  await done(page);
});

test('attacker-controlled names, keys and values render as inert text', async () => {
  for (const path of ['/search', `/trace/${XSS}?span=f000000000000001`]) {
    const page = await open(path);
    await page.waitForSelector(path === '/search' ? '.result' : 'aside.detail:not([hidden])');
    await page.hover(path === '/search' ? `.result[data-trace-id="${XSS}"] .result-title` : '.row');
    const state = await page.evaluate(() => ({
      xss: window.__xss,
      scripts: document.querySelectorAll('main script').length,
      imgs: document.querySelectorAll('main img, main b, main i, main svg[onload]').length,
      text: document.querySelector('main').textContent,
    }));
    assert.equal(state.xss, undefined, `${path}: injected code ran`);
    assert.equal(state.scripts, 0);
    assert.equal(state.imgs, 0, `${path}: injected markup became elements`);
    assert.ok(state.text.includes('<script>window.__xss=1</script>'), `${path}: the name is shown as text`);
    await done(page, path === '/search' ? null : 'xss');
  }
});

test('an empty range offers the newest matching trace, and the empty state names this server\'s ports', async () => {
  // The official OTLP example is from 2018: not in the default last hour.
  let page = await open('/search?service=my.service');
  await page.waitForSelector('.newest-match');
  assert.match(await page.textContent('.notice'), /The newest matching trace started/);
  await page.click('.newest-match');
  await page.waitForURL(/lookback=custom/);
  await page.waitForSelector('.result');
  assert.deepEqual(await resultIds(page), [OTLP_EXAMPLE]);
  await done(page);

  const { listen } = await (await fetch(`${BASE}/api/v1/status`)).json();
  page = await open('/search?service=no-such-service');
  await page.waitForSelector('.listen-hint');
  const hint = await page.textContent('.listen-hint');
  for (const [name, addr] of [['OTLP gRPC', listen.otlpGrpc], ['OTLP HTTP', listen.otlpHttp], ['Zipkin', listen.zipkin]]) {
    assert.ok(hint.includes(`${name} on :${addr.split(':').pop()}`), `${name} ${addr} in: ${hint}`);
  }
  assert.doesNotMatch(hint, /:4317\b/, 'the test server does not listen on the default port');
  await done(page, 'search-empty');
});

test('empty states and errors are explained on the page', async () => {
  for (const [path, message] of [
    ['/trace/ffffffffffffffffffffffffffffffff', /Trace not found/],
    ['/trace/xyz', /Not a trace id[\s\S]*32 hex/],
    ['/search?service=no-such-service', /No traces found/],
    ['/search?minDuration=fast', /parameter `minDuration`/],
    ['/compare', /Pick two traces/],
    ['/no/such/page', /No such page/],
  ]) {
    const page = await open(path);
    await page.waitForSelector('.notice');
    assert.match(await page.textContent('.notice'), message, path);
    await page.context().close();
  }
  const page = await newPage(browser);
  await page.route('**/api/**', (route) => route.abort('connectionrefused'));
  await page.goto(`${BASE}/search`);
  await page.waitForSelector('.notice-error');
  assert.match(await page.textContent('.notice-error'), /cannot be reached/);
  await page.context().close();
});

test('dark theme: follows the system, switches, and is remembered', async () => {
  const page = await open(`/trace/${REPORT}`, { theme: 'dark' });
  await page.waitForSelector(`body[data-trace-ready="${REPORT}"]`);
  assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
  await page.screenshot({ path: `${shots}/trace-dark.png` });
  await page.click('#theme');
  assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
  await page.reload();
  await page.waitForSelector(`body[data-trace-ready="${REPORT}"]`);
  assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
  await done(page);
});
