// The service map: caller → callee edges from `GET /api/v1/dependencies`, laid out left to
// right in layers, with call and error counts on each edge, coloured by how often the trace
// context was lost on them (`GET /api/v1/integrity/edges`; an edge whose context is always
// lost appears only there, dashed). Clicking a service searches it.

import { getJSON } from './api.js';
import { h, svg, notice } from './dom.js';
import { serviceColor, count } from './format.js';
import { navigate } from './app.js';

const RANGES = [['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'],
  ['2d', 'Last 2 days'], ['7d', 'Last 7 days'], ['all', 'All time']];

export function mount(main, _args, url) {
  const abort = new AbortController();
  // A relative range, all stored data, or an absolute one (`start`/`end` in Unix
  // nanoseconds, as the API takes them).
  const [start, end] = [url.searchParams.get('start'), url.searchParams.get('end')];
  const lookback = start || end ? 'custom' : url.searchParams.get('lookback') ?? '1h';
  const options = lookback === 'custom' ? [...RANGES, ['custom', 'Custom range']] : RANGES;
  const select = h('select', { 'aria-label': 'Time range' },
    options.map(([v, text]) => h('option', { value: v, selected: v === lookback }, text)));
  select.addEventListener('change', () => navigate(`/dependencies?lookback=${select.value}`));
  const body = h('div', { class: 'map-body' }, h('p', { class: 'muted' }, 'Loading…'));
  main.replaceChildren(h('div', { class: 'map-page' },
    h('div', { class: 'page-head' }, h('h1', null, 'Service map'), select), body));
  const days = lookback.match(/^(\d+)d$/);
  const params = lookback === 'all' ? {} : lookback === 'custom' ? { start, end }
    : { since: days ? `${Number(days[1]) * 24}h` : lookback };
  // What a click on a service searches: the same range where the search page can.
  const searchRange = lookback === 'custom' && start && end
    ? `lookback=custom&start=${BigInt(start) / 1000n}&end=${BigInt(end) / 1000n}`
    : `lookback=${encodeURIComponent(lookback === 'all' || lookback === 'custom' ? '7d' : lookback)}`;
  // Edge health is a courtesy: a server without chain analysis (501) still draws its map.
  const health = getJSON('/api/v1/integrity/edges', params, { signal: abort.signal })
    .then((r) => r.edges, (e) => { if (e.name === 'AbortError') throw e; return []; });
  Promise.all([getJSON('/api/v1/dependencies', params, { signal: abort.signal }), health])
    .then(async ([r, integrity]) => {
      const edges = mergeHealth(r.dependencies, integrity);
      if (!edges.length) {
        const box = notice('empty', 'No dependencies in this range',
          'Edges come from spans whose parent span belongs to another service. Try a longer range, ' +
          'or check that services propagate trace context to each other.');
        body.replaceChildren(box);
        // Data at other times (old timestamps, a quiet week): offer it.
        if (lookback !== 'all') {
          const all = await getJSON('/api/v1/dependencies', {}, { signal: abort.signal });
          if (all.dependencies.length) {
            box.append(h('p', null, `There are ${all.dependencies.length} at other times. `,
              h('a', { href: '/dependencies?lookback=all', class: 'all-time' }, 'Show all time')));
          }
        }
        return;
      }
      body.replaceChildren(graph(edges, searchRange), edgeTable(edges, searchRange));
    })
    .catch((e) => {
      if (e.name !== 'AbortError') body.replaceChildren(notice('error', 'The service map could not be loaded', e.message));
    });
  return { destroy: () => abort.abort() };
}

/** Dependency edges with the calls whose context crossed and was lost on each (summed over
 * protocols); an edge only edge health knows (every call lost its context) is added. */
export function mergeHealth(deps, health) {
  const byKey = new Map(deps.map((e) => [`${e.parent}\u0000${e.child}`, { ...e, crossed: 0, lost: 0 }]));
  for (const x of health) {
    const key = `${x.caller}\u0000${x.callee}`;
    const e = byKey.get(key) ?? { parent: x.caller, child: x.callee, callCount: 0, errorCount: 0, crossed: 0, lost: 0 };
    e.crossed += x.crossed;
    e.lost += x.lost;
    byKey.set(key, e);
  }
  return [...byKey.values()];
}

const breakRate = (e) => (e.crossed + e.lost ? e.lost / (e.crossed + e.lost) : 0);
const pct = (x) => `${x >= 0.1 ? Math.round(x * 100) : (x * 100).toFixed(1)}%`;

/** Layers by longest path from the callers nobody calls (edges closing a cycle ignored). */
export function layout(edges) {
  const names = [...new Set(edges.flatMap((e) => [e.parent, e.child]))].sort();
  const out = new Map(names.map((n) => [n, []]));
  for (const e of edges) if (e.parent !== e.child) out.get(e.parent).push(e.child);
  // Depth-first search marks back edges so the rest is acyclic.
  const state = new Map();
  const back = new Set();
  for (const root of names) {
    if (state.has(root)) continue;
    const stack = [[root, 0]];
    state.set(root, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [n, k] = top;
      const next = out.get(n)[k];
      if (next === undefined) { state.set(n, 2); stack.pop(); continue; }
      top[1]++;
      if (state.get(next) === 1) back.add(`${n}\u0000${next}`);
      else if (!state.has(next)) { state.set(next, 1); stack.push([next, 0]); }
    }
  }
  const layer = new Map(names.map((n) => [n, 0]));
  for (let pass = 0; pass < names.length; pass++) {
    let changed = false;
    for (const e of edges) {
      if (e.parent === e.child || back.has(`${e.parent}\u0000${e.child}`)) continue;
      if (layer.get(e.child) < layer.get(e.parent) + 1) { layer.set(e.child, layer.get(e.parent) + 1); changed = true; }
    }
    if (!changed) break;
  }
  const layers = [];
  for (const n of names) (layers[layer.get(n)] ??= []).push(n);
  // Order within layers by the mean position of callers, twice over.
  const pos = new Map();
  layers.forEach((l) => l.forEach((n, i) => pos.set(n, i)));
  for (let sweep = 0; sweep < 2; sweep++) {
    for (const l of layers.slice(1)) {
      const bary = (n) => {
        const callers = edges.filter((e) => e.child === n && layer.get(e.parent) < layer.get(n)).map((e) => pos.get(e.parent));
        return callers.length ? callers.reduce((a, b) => a + b, 0) / callers.length : pos.get(n);
      };
      l.sort((a, b) => bary(a) - bary(b) || (a < b ? -1 : 1));
      l.forEach((n, i) => pos.set(n, i));
    }
  }
  return { layers, layer, pos };
}

function graph(edges, searchRange) {
  const { layers, layer, pos } = layout(edges);
  const boxW = (n) => Math.min(240, 24 + n.length * 7.5);
  const colW = Math.max(...layers.flat().map(boxW)) + 140;
  const rowH = 76;
  const tallest = Math.max(...layers.map((l) => l.length));
  const width = layers.length * colW + 40;
  const height = tallest * rowH + 40;
  const place = (n) => {
    const l = layers[layer.get(n)];
    const offset = ((tallest - l.length) * rowH) / 2;
    return { x: 20 + layer.get(n) * colW, y: 20 + offset + pos.get(n) * rowH, w: boxW(n), h: 36 };
  };
  const marker = svg('defs', null, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow' })));
  const edgeEls = edges.map((e) => {
    const a = place(e.parent);
    const b = place(e.child);
    const x1 = a.x + a.w;
    const y1 = a.y + a.h / 2;
    let x2 = b.x;
    const y2 = b.y + b.h / 2;
    let d;
    if (e.parent === e.child) {
      d = `M${a.x + a.w - 20},${a.y} C${a.x + a.w + 30},${a.y - 40} ${a.x + a.w + 30},${a.y + a.h + 40} ${a.x + a.w - 20},${a.y + a.h}`;
      x2 = a.x + a.w + 28;
    } else if (x2 > x1) {
      const mid = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
    } else {
      // A call back to an earlier layer: around the bottom.
      const low = Math.max(a.y, b.y) + rowH;
      d = `M${a.x + a.w / 2},${a.y + a.h} C${a.x + a.w / 2},${low} ${b.x + b.w / 2},${low} ${b.x + b.w / 2},${b.y + b.h}`;
    }
    const lost = e.lost ? ` · ${count(e.lost)} lost (${pct(breakRate(e))})` : '';
    const label = `${count(e.callCount)} call${e.callCount === 1 ? '' : 's'}${e.errorCount ? ` · ${count(e.errorCount)} err` : ''}${lost}`;
    const lx = e.parent === e.child ? x2 : (x1 + x2) / 2;
    const ly = e.parent === e.child ? a.y - 8 : (y1 + y2) / 2 - 6;
    const cls = `edge${e.errorCount ? ' edge-error' : ''}${e.lost ? ' edge-broken' : ''}${e.callCount ? '' : ' edge-lost-only'}`;
    return [
      svg('g', { class: cls, dataset: { parent: e.parent, child: e.child, lost: e.lost } },
        // The more often the context is lost on an edge, the thicker its broken line.
        svg('path', { d, 'marker-end': 'url(#arrow)', style: e.lost ? { strokeWidth: `${1.5 + 3 * breakRate(e)}px` } : null }), svg('title', null, `${e.parent} → ${e.child}: ${label}`)),
      // Labels go on top of every edge, with a halo of the background, so no line crosses them.
      svg('text', { x: lx, y: ly, 'text-anchor': 'middle', class: `edge-label${e.errorCount ? ' edge-label-error' : ''}` },
        label, svg('title', null, `${e.parent} → ${e.child}: ${label}`)),
    ];
  });
  const nodes = layers.flat().map((n) => {
    const p = place(n);
    const g = svg('g', { class: 'node', tabindex: 0, role: 'link', dataset: { service: n }, 'aria-label': `Search traces of ${n}` },
      svg('rect', { x: p.x, y: p.y, width: p.w, height: p.h, rx: 6, style: { stroke: serviceColor(n) } }),
      svg('text', { x: p.x + p.w / 2, y: p.y + p.h / 2 + 4, 'text-anchor': 'middle' }, n.length > 30 ? `${n.slice(0, 29)}…` : n),
      svg('title', null, n));
    const open = () => navigate(`/search?service=${encodeURIComponent(n)}&${searchRange}`);
    g.addEventListener('click', open);
    g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
    return g;
  });
  return h('div', { class: 'map-scroll' },
    svg('svg', { class: 'map', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Service dependency graph' },
      marker, edgeEls.map(([edge]) => edge), edgeEls.map(([, label]) => label), nodes));
}

function edgeTable(edges, searchRange) {
  const search = (n) => h('a', { href: `/search?service=${encodeURIComponent(n)}&${searchRange}` }, n);
  const sorted = [...edges].sort((a, b) => b.callCount - a.callCount);
  return h('table', { class: 'edges' },
    h('thead', null, h('tr', null, h('th', null, 'Caller'), h('th', null, 'Callee'), h('th', null, 'Calls'), h('th', null, 'Errors'),
      h('th', { title: 'Calls whose trace context was lost (of those whose outcome is known)' }, 'Context lost'))),
    h('tbody', null, sorted.map((e) => h('tr', { class: e.errorCount || e.lost ? 'has-error' : null, dataset: { parent: e.parent, child: e.child } },
      h('td', null, search(e.parent)), h('td', null, search(e.child)),
      h('td', { class: 'num' }, count(e.callCount)), h('td', { class: 'num' }, count(e.errorCount)),
      h('td', { class: e.lost ? 'num lost' : 'num' }, e.lost ? `${count(e.lost)} (${pct(breakRate(e))})` : '0')))));
}
