// Strand's web UI: a router over the page modules, the top bar and the theme. Pages are
// plain ES modules; nothing is built (docs/adr/004-web-ui-without-a-build-step.md).

import { h, notice } from './dom.js';
import { pickTenant } from './api.js';

const main = document.getElementById('main');
let current = null; // the page on screen: { destroy() } or null

const pages = {
  search: () => import('./search.js'),
  trace: () => import('./trace.js'),
  compare: () => import('./compare.js'),
  dependencies: () => import('./map.js'),
  logs: () => import('./logs.js'),
};

/** Which page a location shows, and its arguments. Paths are the Jaeger UI's. */
function route(url) {
  const path = url.pathname.replace(/\/+$/, '') || '/';
  if (path === '/' || path === '/search') return { page: 'search', args: {} };
  if (path === '/dependencies') return { page: 'dependencies', args: {} };
  if (path === '/logs') return { page: 'logs', args: {} };
  if (path === '/compare') return { page: 'compare', args: { a: url.searchParams.get('a') ?? '', b: url.searchParams.get('b') ?? '' } };
  const m = path.match(/^\/trace\/([^/]+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    const pair = id.split('...');
    if (pair.length === 2) return { page: 'compare', args: { a: pair[0], b: pair[1] } };
    return { page: 'trace', args: { id } };
  }
  return { page: null, args: {} };
}

async function render() {
  const url = new URL(window.location.href);
  const { page, args } = route(url);
  current?.destroy?.();
  current = null;
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    a.classList.toggle('active', a.dataset.page === page);
  }
  document.title = `Strand · ${{ search: 'Search', trace: 'Trace', compare: 'Compare', dependencies: 'Service map', logs: 'Logs' }[page] ?? 'Not found'}`;
  if (!page) {
    main.replaceChildren(notice('empty', 'No such page', `Strand has no page at ${url.pathname}.`));
    return;
  }
  try {
    const module = await pages[page]();
    const view = module.mount(main, args, url);
    current = view ?? null;
  } catch (e) {
    main.replaceChildren(notice('error', 'This page failed to load', String(e?.message ?? e)));
  }
}

/** Goes to an in-app URL (pushes history unless `replace`). */
export function navigate(href, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  render();
}

// In-app links navigate without reloading; modified clicks open tabs as usual.
document.addEventListener('click', (e) => {
  const a = e.target.closest?.('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.target || a.origin !== window.location.origin || a.hasAttribute('download')) return;
  const href = a.getAttribute('href');
  if (href.startsWith('#')) return;
  e.preventDefault();
  navigate(href);
});
window.addEventListener('popstate', render);

document.getElementById('lookup').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = e.target.elements.traceId;
  const id = input.value.trim();
  if (id) {
    input.value = '';
    navigate(`/trace/${encodeURIComponent(id)}`);
  }
});

// Theme: the system's preference unless the user picked one.
const themeButton = document.getElementById('theme');
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  themeButton.textContent = theme === 'dark' ? 'Light' : 'Dark';
  themeButton.setAttribute('aria-label', `Switch to the ${theme === 'dark' ? 'light' : 'dark'} theme`);
}
applyTheme(localStorage.getItem('strand.theme') ??
  (window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'));
themeButton.addEventListener('click', () => {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  localStorage.setItem('strand.theme', next);
  applyTheme(next);
  window.dispatchEvent(new Event('strand:theme'));
});

// Tenants: a picker in the top bar when this token may read more than one.
window.addEventListener('strand:tenants', (e) => {
  const { tenants, current } = e.detail;
  if (tenants.length < 2 || document.getElementById('tenant')) return;
  const select = h('select', { id: 'tenant', class: 'tenant-picker', 'aria-label': 'Tenant',
    title: 'Tenant (X-Scope-OrgID)', onchange: () => pickTenant(select.value) },
  tenants.map((t) => h('option', { value: t, selected: t === current }, t)));
  themeButton.before(select);
});

render();
