// The Logs page: search log records by service, minimum severity, text, attribute and time,
// or list one trace's records; each row links to its trace and span. The form lives in the
// URL, so a search can be shared and the back button works.

import { getJSON } from './api.js';
import { h, notice } from './dom.js';
import { buildLogs } from './model.js';
import { logRow } from './trace.js';
import { navigate } from './app.js';

const RANGES = [['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'], ['168h', 'Last 7 days']];
const SEVERITIES = [['', 'Any severity'], ['DEBUG', 'DEBUG and above'], ['INFO', 'INFO and above'], ['WARN', 'WARN and above'], ['ERROR', 'ERROR and above'], ['FATAL', 'FATAL']];
const FIELDS = ['service', 'severity', 'q', 'attr', 'since', 'traceId'];

export function mount(main, _args, url) {
  const abort = new AbortController();
  const p = url.searchParams;
  const input = (name, label, props = {}) => h('label', null, label,
    h('input', { name, value: p.get(name) ?? '', autocomplete: 'off', spellcheck: 'false', ...props }));
  const select = (name, label, options, fallback) => h('label', null, label,
    h('select', { name }, options.map(([v, text]) => h('option', { value: v, selected: (p.get(name) ?? fallback) === v }, text))));
  const form = h('form', { class: 'logs-form', role: 'search' },
    input('service', 'Service', { placeholder: 'any' }),
    select('severity', 'Severity', SEVERITIES, ''),
    input('q', 'Text in the body', { type: 'search', placeholder: 'e.g. timeout' }),
    input('attr', 'Attribute', { placeholder: 'key=value' }),
    select('since', 'Time', RANGES, '1h'),
    input('traceId', 'Trace id', { placeholder: 'all of one trace' }),
    h('button', { type: 'submit' }, 'Find logs'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const qs = new URLSearchParams();
    for (const name of FIELDS) {
      const v = form.elements[name].value.trim();
      if (v) qs.set(name, v);
    }
    navigate(`/logs?${qs}`);
  });
  const results = h('div', { class: 'log-results' });
  main.replaceChildren(h('div', { class: 'logs-page' }, h('h1', null, 'Logs'), form, results));

  const traceId = p.get('traceId');
  // The time range is fixed when the page opens, so "Older records" continues the same
  // search however long the reader waits between pages.
  const hours = { '15m': 0.25, '1h': 1, '6h': 6, '24h': 24, '168h': 168 }[p.get('since') ?? '1h'] ?? 1;
  const end = new Date();
  const start = new Date(end.getTime() - hours * 3600_000);
  const params = traceId ? { traceId } : {
    service: p.get('service'), severity: p.get('severity'), q: p.get('q'), attr: p.get('attr'),
    start: start.toISOString(), end: end.toISOString(), limit: 100,
  };
  const table = h('tbody');
  const more = h('button', { type: 'button', hidden: true }, 'Older records');
  let shown = 0;
  const load = (cursor) => {
    more.disabled = true;
    results.setAttribute('aria-busy', 'true');
    getJSON('/api/v1/logs', { ...params, cursor }, { signal: abort.signal })
      .then((json) => {
        const logs = buildLogs(json);
        // Searches come newest first; one trace's records in time order.
        if (!traceId) logs.reverse();
        for (const l of logs) {
          const href = l.traceId ? `/trace/${l.traceId}${l.spanId ? `?span=${l.spanId}` : ''}` : null;
          table.append(logRow(l, null, href ? h('a', { href, class: 'log-trace' }, l.spanId ? 'span' : 'trace') : null));
        }
        shown += logs.length;
        if (!shown) {
          results.replaceChildren(notice('empty', 'No log records found',
            traceId ? `No record carries trace id ${traceId}.` : 'Widen the time range or loosen the conditions.'));
        } else if (!table.isConnected) {
          results.replaceChildren(h('p', { class: 'muted log-count' }), h('table', { class: 'logs' }, table), more);
        }
        const counter = results.querySelector('.log-count');
        if (counter) counter.textContent = `${shown} record${shown === 1 ? '' : 's'}${json.nextCursor ? ' (more below)' : ''}`;
        more.hidden = !json.nextCursor;
        more.disabled = false;
        more.onclick = () => load(json.nextCursor);
        if (!cursor) for (const w of json.warnings ?? []) results.prepend(h('p', { class: 'warning' }, w));
        results.removeAttribute('aria-busy');
        document.body.dataset.logsReady = String(shown);
      })
      .catch((e) => {
        if (e.name === 'AbortError') return;
        results.replaceChildren(notice('error', 'The logs could not be loaded', e.message));
      });
  };
  load(undefined);
  return { destroy: () => abort.abort() };
}
