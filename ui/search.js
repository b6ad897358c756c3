// The search page: a form whose state lives in the URL (Jaeger UI's parameters, so shared
// links keep working), a duration-over-time scatter plot and the result list.

import { getJSON, ApiError } from './api.js';
import { h, svg, notice } from './dom.js';
import { duration, dateTime, ago, nanosToMs, serviceColor, count, timeTicks } from './format.js';
import { autocomplete } from './autocomplete.js';
import { navigate } from './app.js';

const LOOKBACKS = [
  ['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['3h', 'Last 3 hours'],
  ['6h', 'Last 6 hours'], ['12h', 'Last 12 hours'], ['24h', 'Last 24 hours'], ['2d', 'Last 2 days'],
  ['7d', 'Last 7 days'], ['custom', 'Custom range'],
];
const INTEGRITY = [['', 'Any'], ['broken', 'Broken chains'], ['missing_parent', 'Missing parent'],
  ['missing_root', 'Missing root'], ['client_without_server', 'Client without server'],
  ['producer_without_consumer', 'Producer without consumer'], ['consumer_new_root', 'Consumer started a new trace'],
  ['unrooted_work', 'Work without a request'], ['clock_skew', 'Clock skew']];
const SORTS = [['recent', 'Most recent'], ['longest', 'Longest first'], ['shortest', 'Shortest first'],
  ['spans', 'Most spans'], ['errors', 'Most errors']];

/** The query a search URL describes (Jaeger's parameter names, plus `errors`). */
export function queryFromUrl(params) {
  const tags = parseTags(params.get('tags') ?? '');
  let errors = params.get('errors') === 'true';
  // Jaeger marks failed spans with the tag error=true; Strand searches the span status.
  const errorTag = tags.findIndex(([k, v]) => k === 'error' && v === 'true');
  if (errorTag >= 0) {
    tags.splice(errorTag, 1);
    errors = true;
  }
  return {
    service: params.get('service') ?? '',
    operation: params.get('operation') ?? '',
    tags,
    errors,
    lookback: params.get('lookback') ?? (params.get('start') ? 'custom' : '1h'),
    start: params.get('start') ?? '',
    end: params.get('end') ?? '',
    minDuration: params.get('minDuration') ?? '',
    maxDuration: params.get('maxDuration') ?? '',
    limit: params.get('limit') ?? '20',
    sort: params.get('sort') ?? 'recent',
    integrity: params.get('integrity') ?? '',
  };
}

/** `tags` as Jaeger's UI writes it (a JSON object) or as typed (`k=v k2=v2`). */
export function parseTags(raw) {
  const text = raw.trim();
  if (!text) return [];
  if (text.startsWith('{')) {
    try {
      return Object.entries(JSON.parse(text)).map(([k, v]) => [k, String(v)]);
    } catch { /* fall through: treat as typed text */ }
  }
  return text.split(/\s+/).filter(Boolean).map((t) => {
    const eq = t.indexOf('=');
    return eq < 0 ? [t, ''] : [t.slice(0, eq), t.slice(eq + 1)];
  });
}

function urlFromQuery(q) {
  const p = new URLSearchParams();
  const set = (k, v) => { if (v) p.set(k, v); };
  set('service', q.service);
  set('operation', q.operation);
  if (q.tags.length) p.set('tags', JSON.stringify(Object.fromEntries(q.tags)));
  if (q.errors) p.set('errors', 'true');
  set('lookback', q.lookback);
  if (q.lookback === 'custom') {
    set('start', q.start);
    set('end', q.end);
  }
  set('minDuration', q.minDuration);
  set('maxDuration', q.maxDuration);
  set('limit', q.limit);
  set('integrity', q.integrity);
  if (q.sort !== 'recent') p.set('sort', q.sort);
  return `/search?${p}`;
}

/** The native search API's parameters for a query. */
function apiParams(q) {
  const params = {
    service: q.service, operation: q.operation, minDuration: q.minDuration, maxDuration: q.maxDuration,
    limit: q.limit, attr: q.tags.map(([k, v]) => `${k}=${v}`), status: q.errors ? 'error' : '',
    integrity: q.integrity,
  };
  if (q.lookback === 'custom') {
    // Jaeger's URL carries microseconds; the API takes nanoseconds.
    if (q.start) params.start = `${q.start}000`;
    if (q.end) params.end = `${q.end}000`;
  } else {
    const days = q.lookback.match(/^(\d+)d$/);
    params.since = days ? `${Number(days[1]) * 24}h` : q.lookback;
  }
  return params;
}

const toLocalInput = (us) => {
  if (!us) return '';
  const d = new Date(Number(us) / 1000);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
};
const fromLocalInput = (v) => (v ? String(new Date(v).getTime() * 1000) : '');

export function mount(main, _args, url) {
  const q = queryFromUrl(url.searchParams);
  const abort = new AbortController();
  const field = (label, control, hint) => h('label', { class: 'field' }, h('span', null, label), control,
    hint ? h('small', null, hint) : null);

  const service = h('input', { name: 'service', value: q.service, placeholder: 'All services', spellcheck: 'false' });
  const operation = h('input', { name: 'operation', value: q.operation, placeholder: 'All operations', spellcheck: 'false' });
  const tags = h('input', { name: 'tags', value: q.tags.map(([k, v]) => `${k}=${v}`).join(' '),
    placeholder: 'http.response.status_code=500', spellcheck: 'false' });
  const errors = h('input', { type: 'checkbox', name: 'errors', checked: q.errors });
  const lookback = h('select', { name: 'lookback' },
    LOOKBACKS.map(([v, text]) => h('option', { value: v, selected: v === q.lookback }, text)));
  const start = h('input', { type: 'datetime-local', step: '1', name: 'start', value: toLocalInput(q.start) });
  const end = h('input', { type: 'datetime-local', step: '1', name: 'end', value: toLocalInput(q.end) });
  const custom = h('div', { class: 'custom-range', hidden: q.lookback !== 'custom' },
    field('From', start), field('To', end));
  lookback.addEventListener('change', () => {
    custom.hidden = lookback.value !== 'custom';
    if (!custom.hidden && !start.value) {
      const now = Date.now() * 1000;
      start.value = toLocalInput(now - 3600e6);
      end.value = toLocalInput(now);
    }
  });
  const minDuration = h('input', { name: 'minDuration', value: q.minDuration, placeholder: 'e.g. 250ms', size: 8 });
  const maxDuration = h('input', { name: 'maxDuration', value: q.maxDuration, placeholder: 'e.g. 2s', size: 8 });
  const limit = h('input', { type: 'number', name: 'limit', value: q.limit, min: 1, max: 1000 });
  const integrity = h('select', { name: 'integrity' },
    INTEGRITY.map(([v, text]) => h('option', { value: v, selected: v === q.integrity }, text)));

  const form = h('form', { class: 'search-form', 'aria-label': 'Search traces' },
    field('Service', service),
    field('Operation', operation),
    field('Attributes', tags, 'key=value, space-separated; all must hold on one span'),
    h('label', { class: 'check' }, errors, ' Errors only'),
    field('Chain integrity', integrity, 'settled traces whose context was lost'),
    field('Time range', lookback),
    custom,
    h('div', { class: 'row2' }, field('Min span duration', minDuration), field('Max span duration', maxDuration)),
    field('Limit', limit),
    h('button', { type: 'submit', class: 'primary' }, 'Find traces'));

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    navigate(urlFromQuery({
      service: service.value.trim(), operation: operation.value.trim(), tags: parseTags(tags.value),
      errors: errors.checked, lookback: lookback.value,
      start: lookback.value === 'custom' ? fromLocalInput(start.value) : '',
      end: lookback.value === 'custom' ? fromLocalInput(end.value) : '',
      minDuration: minDuration.value.trim(), maxDuration: maxDuration.value.trim(),
      limit: limit.value.trim(), sort: q.sort, integrity: integrity.value,
    }));
  });

  const results = h('section', { class: 'results', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Searching…'));
  const demo = h('div', { class: 'demo-banner', hidden: true });
  main.replaceChildren(h('div', { class: 'search-page' }, h('aside', { class: 'sidebar' }, form),
    h('div', { class: 'search-main' }, demo, results)));
  demoBanner(demo, abort.signal);

  // Autocomplete from the API: services, the service's operations, attribute names, values.
  let servicesList = null;
  autocomplete(service, async () => {
    servicesList ??= (await getJSON('/api/v1/services', {}, { signal: abort.signal })).services;
    return servicesList;
  });
  autocomplete(operation, async () => {
    if (!service.value.trim()) return [];
    const r = await getJSON(`/api/v1/services/${encodeURIComponent(service.value.trim())}/operations`, {}, { signal: abort.signal });
    return [...new Set(r.operations.map((o) => o.name))];
  });
  autocomplete(tags, async (token) => {
    const svc = service.value.trim();
    const eq = token.indexOf('=');
    if (eq < 0) {
      const r = await getJSON('/api/v1/attributes', { service: svc }, { signal: abort.signal });
      return r.names.map((n) => `${n}=`);
    }
    const key = token.slice(0, eq);
    const r = await getJSON(`/api/v1/attributes/${encodeURIComponent(key)}/values`, { service: svc }, { signal: abort.signal });
    return r.values.map((v) => `${key}=${v}`);
  }, { tokens: true });

  runSearch(results, q, abort.signal);
  return { destroy: () => abort.abort() };
}

async function runSearch(results, q, signal) {
  const traces = [];
  let cursor = null;
  let warnings = [];
  let newest = null;
  let elsewhere;
  const selected = new Set();
  try {
    const page = await getJSON('/api/v1/search', apiParams(q), { signal });
    traces.push(...page.traces);
    cursor = page.nextCursor;
    warnings = page.warnings ?? [];
    newest = page.newestMatch ?? null;
    elsewhere = page.matchesElsewhere;
  } catch (e) {
    if (e.name === 'AbortError') return;
    results.replaceChildren(e instanceof ApiError && e.status === 400
      ? notice('error', 'The search could not run', e.message)
      : notice('error', 'Search failed', e.message));
    return;
  }
  const draw = () => {
    if (!traces.length) {
      results.replaceChildren(emptyState(q, newest, elsewhere), ...warnings.map((w) => h('p', { class: 'warning', role: 'note' }, w)));
      if (!newest) listenHint(results.querySelector('.notice'), signal);
      return;
    }
    const sorted = sortTraces(traces, q.sort);
    const compare = h('button', { type: 'button', disabled: selected.size !== 2 },
      `Compare selected (${selected.size}/2)`);
    compare.addEventListener('click', () => {
      const [a, b] = [...selected];
      navigate(`/trace/${a}...${b}`);
    });
    const sort = h('select', { 'aria-label': 'Sort results' },
      SORTS.map(([v, text]) => h('option', { value: v, selected: v === q.sort }, text)));
    sort.addEventListener('change', () => {
      q.sort = sort.value;
      const p = new URLSearchParams(window.location.search);
      if (q.sort === 'recent') p.delete('sort'); else p.set('sort', q.sort);
      history.replaceState(null, '', `/search?${p}`);
      draw();
    });
    const maxDur = Math.max(...traces.map((t) => Number(t.durationNano)), 1);
    const list = h('ol', { class: 'result-list' }, sorted.map((t) => resultItem(t, maxDur, selected, draw)));
    const more = cursor ? h('button', { type: 'button', class: 'more' }, 'Load more') : null;
    more?.addEventListener('click', async () => {
      more.disabled = true;
      try {
        const page = await getJSON('/api/v1/search', { ...apiParams(q), cursor }, { signal });
        traces.push(...page.traces);
        cursor = page.nextCursor;
        draw();
      } catch (e) {
        if (e.name !== 'AbortError') more.replaceWith(notice('error', 'Could not load more', e.message));
      }
    });
    results.replaceChildren(
      scatter(traces),
      h('div', { class: 'results-head' },
        h('h2', null, `${count(traces.length)} trace${traces.length === 1 ? '' : 's'}`),
        h('div', { class: 'tools' }, sort, compare)),
      ...warnings.map((w) => h('p', { class: 'warning', role: 'note' }, w)),
      list, more ?? '');
  };
  draw();
}

/** No results: where the newest matching trace is, when there is one, else what to check. */
function emptyState(q, newest, elsewhere) {
  if (newest) {
    // The newest match's time span, with an hour each side, in the URL's microseconds.
    const us = (ns) => Number(BigInt(ns) / 1000n);
    const hour = 3_600_000_000;
    const start = Math.max(0, us(newest.startTimeUnixNano) - hour);
    const end = us(newest.endTimeUnixNano ?? newest.startTimeUnixNano) + hour;
    const href = urlFromQuery({ ...q, lookback: 'custom', start: String(start), end: String(end) });
    return notice('empty', 'No traces found',
      `Nothing matched ${describeRange(q)}.`,
      h('p', null, `The newest matching trace started ${dateTime(us(newest.startTimeUnixNano) / 1000)}. `,
        h('a', { href, class: 'newest-match' }, 'Show that time')));
  }
  return notice('empty', 'No traces found',
    elsewhere === false
      ? `Nothing matched ${describeRange(q)}, nor at any other time.`
      : `Nothing matched ${describeRange(q)}.`,
    'Try fewer filters, or check that your services send to this Strand.');
}

/** With `strand serve --demo`, points a newcomer to the featured demo trace's red span. */
async function demoBanner(box, signal) {
  try {
    const { demo } = await getJSON('/api/v1/status', {}, { signal });
    if (!demo) return;
    box.replaceChildren(h('strong', null, 'Demo data is loaded. '),
      'One patient-report submission has a slow database query, a queue hop to notify-service and an SMS attempt the gateway refused: ',
      h('a', { href: `/trace/${demo.traceId}?span=${demo.spanId}`, class: 'demo-link' }, 'open its red span'), '. ',
      'Another lost its trace context on the queue hop: ',
      h('a', { href: `/trace/${demo.brokenTraceId}`, class: 'demo-broken' }, 'see where the chain broke'),
      ' (once it has settled, 30 seconds after the start).');
    box.hidden = false;
  } catch {
    // Without the banner the search page still lists the demo traces.
  }
}

/** Adds where this server listens (from `/api/v1/status`) to an empty-state notice. */
async function listenHint(box, signal) {
  try {
    const { listen } = await getJSON('/api/v1/status', {}, { signal });
    const port = (a) => (a ? `:${a.split(':').pop()}` : null);
    const parts = [
      ['OTLP gRPC', port(listen.otlpGrpc)], ['OTLP HTTP', port(listen.otlpHttp)],
      ['Jaeger thrift HTTP', port(listen.jaegerThriftHttp)], ['Jaeger agent UDP', port(listen.jaegerAgentUdp)],
      ['Zipkin', port(listen.zipkin)],
    ].filter(([, p]) => p).map(([name, p]) => `${name} on ${p}`);
    box?.append(h('p', { class: 'listen-hint' }, `This server receives ${parts.join(', ')}.`));
  } catch {
    // The hint is a courtesy: without it the notice still says what to check.
  }
}

/** The searched range as words: "in the last hour", "between … and …". */
function describeRange(q) {
  if (q.lookback !== 'custom') return `in the ${(LOOKBACKS.find(([v]) => v === q.lookback)?.[1] ?? q.lookback).toLowerCase()}`;
  return `between ${q.start ? dateTime(Number(q.start) / 1000) : 'the start'} and ${q.end ? dateTime(Number(q.end) / 1000) : 'now'}`;
}

function sortTraces(traces, sort) {
  const key = {
    recent: (t) => -nanosToMs(t.startTimeUnixNano),
    longest: (t) => -Number(t.durationNano),
    shortest: (t) => Number(t.durationNano),
    spans: (t) => -t.spanCount,
    errors: (t) => -t.errorCount,
  }[sort] ?? ((t) => -nanosToMs(t.startTimeUnixNano));
  return [...traces].sort((a, b) => key(a) - key(b));
}

function resultItem(t, maxDur, selected, redraw) {
  const durUs = Number(t.durationNano) / 1000;
  const startMs = nanosToMs(t.startTimeUnixNano);
  const pick = h('input', { type: 'checkbox', 'aria-label': `Select trace ${t.traceId} to compare`,
    checked: selected.has(t.traceId), disabled: !selected.has(t.traceId) && selected.size >= 2 });
  pick.addEventListener('change', () => {
    if (pick.checked) selected.add(t.traceId); else selected.delete(t.traceId);
    redraw();
  });
  return h('li', { class: `result${t.errorCount ? ' has-error' : ''}`, dataset: { traceId: t.traceId } },
    h('div', { class: 'result-head' }, pick,
      h('a', { class: 'result-title', href: `/trace/${t.traceId}` },
        h('span', { class: 'svc-dot', style: { background: serviceColor(t.rootService) } }),
        `${t.rootService}: ${t.rootName}`),
      h('code', { class: 'tid' }, t.traceId.slice(0, 7)),
      h('span', { class: 'dur' }, duration(durUs))),
    h('div', { class: 'result-bar' }, h('div', { style: { width: `${Math.max(0.5, (Number(t.durationNano) / maxDur) * 100)}%` } })),
    h('div', { class: 'result-meta' },
      h('span', null, `${count(t.spanCount)} span${t.spanCount === 1 ? '' : 's'}`),
      t.errorCount ? h('span', { class: 'errors' }, `${count(t.errorCount)} error${t.errorCount === 1 ? '' : 's'}`) : null,
      t.integrity?.length ? h('span', { class: 'chip chip-chain', title: t.integrity.join(', ') },
        t.integrity.every((k) => k === 'clock_skew') ? 'clock skew' : 'broken chain') : null,
      h('span', { class: 'chips' }, t.services.map((s) => h('span', {
        class: `chip${s.errorCount ? ' chip-error' : ''}`, style: { borderColor: serviceColor(s.name) },
      }, `${s.name} (${s.spanCount})`))),
      h('time', { datetime: new Date(startMs).toISOString(), title: dateTime(startMs) }, ago(startMs))));
}

/** Duration over start time; a dot per trace, red when it has errors. */
function scatter(traces) {
  const width = 900;
  const height = 170;
  const pad = { l: 56, r: 12, t: 10, b: 24 };
  const xs = traces.map((t) => nanosToMs(t.startTimeUnixNano));
  const ys = traces.map((t) => Number(t.durationNano) / 1000);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  if (x1 - x0 < 1) { x0 -= 500; x1 += 500; }
  const y1 = Math.max(...ys, 1) * 1.1;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  const axis = [];
  for (let k = 0; k <= 2; k++) {
    const y = (y1 * k) / 2;
    axis.push(svg('line', { x1: pad.l, x2: width - pad.r, y1: Y(y), y2: Y(y), class: 'grid' }),
      svg('text', { x: pad.l - 6, y: Y(y) + 4, 'text-anchor': 'end', class: 'axis' }, duration(y)));
  }
  // Round times at a step that fits, each label distinct (not four cuts of the range).
  for (const { at, label } of timeTicks(x0, x1)) {
    // Labels near the plot's ends grow inwards, so none is cut off at the edge.
    const x = X(at);
    const anchor = x < pad.l + 40 ? 'start' : x > width - pad.r - 40 ? 'end' : 'middle';
    axis.push(svg('text', { x, y: height - 6, 'text-anchor': anchor, class: 'axis' }, label));
  }
  const dots = traces.map((t, i) => {
    const dot = svg('circle', {
      cx: X(xs[i]), cy: Y(ys[i]), r: Math.min(9, 3 + Math.sqrt(t.spanCount) / 2),
      class: `dot${t.errorCount ? ' dot-error' : ''}`, tabindex: 0, role: 'link',
      'aria-label': `${t.rootService}: ${t.rootName}, ${duration(ys[i])}`,
      style: t.errorCount ? null : { fill: serviceColor(t.rootService) },
    }, svg('title', null, `${t.rootService}: ${t.rootName}\n${duration(ys[i])}, ${t.spanCount} span${t.spanCount === 1 ? '' : 's'}\n${dateTime(xs[i])}`));
    const open = () => navigate(`/trace/${t.traceId}`);
    dot.addEventListener('click', open);
    dot.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
    return dot;
  });
  return h('figure', { class: 'scatter' },
    svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Trace duration over time' }, axis, dots));
}
