// The trace view's benchmark in headless Chromium, run by `strand bench ui` (which starts
// the server and loads the trace): STRAND_URL, TRACE_ID and RUNS come from it. Prints one
// JSON object on stdout; times are milliseconds.

import { launch, newPage } from './lib.mjs';

const BASE = process.env.STRAND_URL;
const ID = process.env.TRACE_ID;
const RUNS = Number(process.env.RUNS ?? 5);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const summary = (xs) => ({ median: round(median(xs)), min: round(Math.min(...xs)), max: round(Math.max(...xs)) });
const round = (x) => Math.round(x * 10) / 10;

const browser = await launch();
const runs = [];
let interactions = null;
try {
  for (let r = 0; r < RUNS; r++) {
    const page = await newPage(browser, { width: 1280, height: 800 });
    await page.goto(`${BASE}/trace/${ID}`);
    await page.waitForSelector(`body[data-trace-ready="${ID}"]`, { timeout: 120_000 });
    const t = await page.evaluate(async () => {
      // The first paint after the view is ready.
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
      const mark = (name) => performance.getEntriesByName(name)[0]?.startTime;
      const api = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/v1/traces/'));
      return {
        requested: mark('strand:trace-requested'),
        fetched: mark('strand:trace-fetched'),
        interactive: mark('strand:trace-interactive'),
        painted: performance.now(),
        apiResponse: api ? api.responseEnd - api.requestStart : null,
        rows: document.querySelectorAll('.row').length,
      };
    });
    runs.push(t);
    if (r === RUNS - 1) interactions = await measureInteractions(page);
    if (page.problems.length) throw new Error(page.problems.join('\n'));
    await page.context().close();
  }
} finally {
  await browser.close();
}

/** Times the interactions on a loaded trace, each from input to the next frame. */
async function measureInteractions(page) {
  return page.evaluate(async () => {
    const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
    const time = async (fn) => { const t0 = performance.now(); fn(); await frame(); return performance.now() - t0; };
    const scroller = document.querySelector('.waterfall');
    const out = { scrollJump: [], scrollStep: [], keyDown: [], collapseAll: [], expandAll: [], find: [] };
    for (let k = 0; k < 20; k++) {
      out.scrollJump.push(await time(() => { scroller.scrollTop = Math.random() * scroller.scrollHeight; }));
    }
    for (let k = 0; k < 30; k++) out.scrollStep.push(await time(() => { scroller.scrollTop += 120; }));
    document.querySelector('.row').click();
    await frame();
    for (let k = 0; k < 30; k++) {
      out.keyDown.push(await time(() => document.dispatchEvent(new KeyboardEvent('keydown', { key: 'ArrowDown', bubbles: true }))));
    }
    const button = (text) => [...document.querySelectorAll('.trace-toolbar button')].find((b) => b.textContent === text);
    for (let k = 0; k < 3; k++) {
      out.collapseAll.push(await time(() => button('Collapse all').click()));
      out.expandAll.push(await time(() => button('Expand all').click()));
    }
    // Find: from typing to the match count shown and painted (includes the box's 120 ms
    // debounce).
    const input = document.querySelector('.trace-toolbar input[type=search]');
    const found = document.querySelector('.find-count');
    for (const text of ['SELECT', 'timed out', 'no-such-thing']) {
      const t0 = performance.now();
      const changed = new Promise((resolve) => {
        const mo = new MutationObserver(() => { mo.disconnect(); resolve(); });
        mo.observe(found, { childList: true, characterData: true, subtree: true });
        setTimeout(resolve, 10_000);
      });
      input.value = text;
      input.dispatchEvent(new Event('input'));
      await changed;
      await frame();
      out.find.push(performance.now() - t0);
    }
    return out;
  });
}

const report = {
  runs: runs.length,
  rows_in_dom: runs[0]?.rows,
  api_response_in_browser: summary(runs.map((r) => r.apiResponse ?? NaN)),
  requested_after_navigation: summary(runs.map((r) => r.requested)),
  fetched_after_navigation: summary(runs.map((r) => r.fetched)),
  build_and_render: summary(runs.map((r) => r.interactive - r.fetched)),
  interactive_after_navigation: summary(runs.map((r) => r.interactive)),
  painted_after_navigation: summary(runs.map((r) => r.painted)),
  interactions: Object.fromEntries(Object.entries(interactions ?? {}).map(([k, v]) => [k, summary(v)])),
};
console.log(JSON.stringify(report));
