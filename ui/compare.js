// Two traces side by side by structure: which operations were added or are missing, ran
// more or fewer times, or got slower or faster. `/trace/{a}...{b}` (the Jaeger UI's compare
// path) and `/compare?a=&b=`.

import { getJSON, ApiError } from './api.js';
import { h, notice } from './dom.js';
import { duration, serviceColor, count } from './format.js';
import { buildTrace, compareTraces } from './model.js';
import { navigate } from './app.js';

const CHANGES = {
  added: 'added', missing: 'missing', more: 'more calls', fewer: 'fewer calls',
  slower: 'slower', faster: 'faster', same: 'same',
};

export function mount(main, { a, b }) {
  const abort = new AbortController();
  const ia = h('input', { name: 'a', value: a, placeholder: 'Trace id A', spellcheck: 'false', 'aria-label': 'Trace A' });
  const ib = h('input', { name: 'b', value: b, placeholder: 'Trace id B', spellcheck: 'false', 'aria-label': 'Trace B' });
  const form = h('form', { class: 'compare-form' }, ia, ib, h('button', { type: 'submit', class: 'primary' }, 'Compare'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const x = ia.value.trim();
    const y = ib.value.trim();
    if (x && y) navigate(`/trace/${encodeURIComponent(x)}...${encodeURIComponent(y)}`);
  });
  const body = h('div', { class: 'compare-body' });
  main.replaceChildren(h('div', { class: 'compare-page' },
    h('div', { class: 'page-head' }, h('h1', null, 'Compare traces'), form), body));
  if (!a || !b) {
    body.append(notice('empty', 'Pick two traces',
      'Enter two trace ids, or tick two traces in the search results and press “Compare selected”.'));
    return { destroy: () => abort.abort() };
  }
  body.append(h('p', { class: 'muted' }, 'Loading both traces…'));
  const load = (id) => getJSON(`/api/v1/traces/${encodeURIComponent(id)}`, {}, { signal: abort.signal })
    .catch((e) => {
      if (e instanceof ApiError && (e.status === 404 || e.status === 400)) throw new ApiError(e.status, `trace ${id}: ${e.message}`);
      throw e;
    });
  Promise.all([load(a), load(b)]).then(([ja, jb]) => {
    const ta = buildTrace(ja);
    const tb = buildTrace(jb);
    body.replaceChildren(...render(ta, tb));
  }).catch((e) => {
    if (e.name !== 'AbortError') body.replaceChildren(notice('error', 'The traces could not be compared', e.message));
  });
  return { destroy: () => abort.abort() };
}

function render(ta, tb) {
  const rows = compareTraces(ta, tb);
  const summary = (t, side) => h('div', { class: 'compare-side' },
    h('h2', null, `${side}: `, h('a', { href: `/trace/${t.traceId}` }, `${t.rootService}: ${t.rootName}`)),
    h('p', null, h('code', null, t.traceId)),
    h('p', null, `${duration(t.duration)} · ${count(t.spans.length)} spans · ${count(t.errors)} errors · depth ${t.depth}`));
  const tally = {};
  for (const r of rows) tally[r.change] = (tally[r.change] ?? 0) + 1;
  const onlyChanges = h('input', { type: 'checkbox', checked: true });
  const table = h('table', { class: 'compare-table' });
  const draw = () => {
    const shown = onlyChanges.checked ? rows.filter((r) => r.change !== 'same') : rows;
    table.replaceChildren(
      h('thead', null, h('tr', null, h('th', null, 'Operation'), h('th', null, 'Change'), h('th', { class: 'num' }, 'Count A'),
        h('th', { class: 'num' }, 'Count B'), h('th', { class: 'num' }, 'Mean A'), h('th', { class: 'num' }, 'Mean B'),
        h('th', { class: 'num' }, 'Δ'))),
      h('tbody', null, shown.map((r) => h('tr', { class: `change-${r.change}`, dataset: { change: r.change } },
        h('td', { style: { paddingLeft: `${6 + Math.min(r.depth, 30) * 14}px` } },
          h('span', { class: 'svc-dot', style: { background: serviceColor(r.service) } }), h('span', { class: 'svc' }, r.service),
          ' ', h('span', { class: 'op' }, r.name)),
        h('td', null, h('span', { class: `badge change-badge-${r.change}` }, CHANGES[r.change])),
        h('td', { class: 'num' }, count(r.a.count)), h('td', { class: 'num' }, count(r.b.count)),
        h('td', { class: 'num' }, r.a.count ? duration(r.meanA) : '–'), h('td', { class: 'num' }, r.b.count ? duration(r.meanB) : '–'),
        h('td', { class: 'num' }, r.a.count && r.b.count ? `${r.meanB >= r.meanA ? '+' : ''}${duration(r.meanB - r.meanA)}` : '–')))));
    if (!shown.length) table.append(h('caption', null, 'The two traces have the same structure and timing.'));
  };
  onlyChanges.addEventListener('change', draw);
  draw();
  return [
    h('div', { class: 'compare-sides' }, summary(ta, 'A'), summary(tb, 'B')),
    h('p', { class: 'compare-tally' }, Object.entries(CHANGES).filter(([k]) => tally[k]).map(([k, text]) =>
      h('span', { class: `badge change-badge-${k}` }, `${tally[k]} ${text}`))),
    h('label', { class: 'check' }, onlyChanges, ' Only changes'),
    table,
  ];
}
