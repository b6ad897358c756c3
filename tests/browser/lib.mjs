// Starting Debian's Chromium for the browser tests and the benchmark.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

/** Flags that keep Chromium quiet on a machine without internet (DEPENDENCIES.md). */
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function launch() {
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  return chromium.launch({ executablePath, headless: true, args: ARGS });
}

/** A page that fails the run on any uncaught error or console error in the UI. */
export async function newPage(browser, { theme = 'light', width = 1280, height = 800 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme: theme });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.problems.push(`console error: ${m.text()}`);
  });
  return page;
}

/** Where screenshots go (CI keeps them as artifacts). */
export function artifacts() {
  const dir = process.env.STRAND_UI_ARTIFACTS ?? new URL('../../test-artifacts/ui', import.meta.url).pathname;
  mkdirSync(dir, { recursive: true });
  return dir;
}
