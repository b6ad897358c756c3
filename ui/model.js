// The trace model: OTLP/JSON from `GET /api/v1/traces/{id}` turned into a span tree, the
// critical path, and the structural comparison of two traces. No DOM here, so Node can test
// it directly (`ui/test/model.test.mjs`).

const KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'];

/** An OTLP/JSON `AnyValue` as display text. */
export function valueText(v) {
  if (v == null) return '';
  if ('stringValue' in v) return String(v.stringValue);
  if ('intValue' in v) return String(v.intValue);
  if ('doubleValue' in v) return String(v.doubleValue);
  if ('boolValue' in v) return String(v.boolValue);
  if ('bytesValue' in v) return `base64:${v.bytesValue}`;
  if ('arrayValue' in v) return JSON.stringify((v.arrayValue.values ?? []).map(valueText));
  if ('kvlistValue' in v) {
    return JSON.stringify(Object.fromEntries((v.kvlistValue.values ?? []).map((kv) => [kv.key, valueText(kv.value)])));
  }
  return '';
}

/** `[{key, value}]` → `[[key, text]]`. */
export function attrs(list) {
  return (list ?? []).map((kv) => [String(kv.key), valueText(kv.value)]);
}

// Splits a decimal nanosecond string into exact integers: microseconds and the rest.
function splitNanos(s) {
  const str = String(s ?? '0');
  if (str.length <= 3) return [0, Number(str) || 0];
  return [Number(str.slice(0, -3)) || 0, Number(str.slice(-3)) || 0];
}

/** The severity range of an OTLP severity number: `trace` … `fatal`, or `unspecified`. */
export function severityRange(n) {
  const ranges = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  return n >= 1 && n <= 24 ? ranges[Math.floor((n - 1) / 4)] : 'unspecified';
}

/**
 * Log records from OTLP/JSON `resourceLogs` (`GET /api/v1/logs`), flat and ordered by time.
 * With a `trace` (from `buildTrace`), `time` is microseconds relative to its start and
 * `span` the index of the span that wrote the record (or -1).
 */
export function buildLogs(json, trace = null) {
  const out = [];
  const [baseUs, baseNs] = trace?.base ?? [0, 0];
  for (const rl of json.resourceLogs ?? []) {
    const resource = attrs(rl.resource?.attributes);
    const service = resource.find(([k]) => k === 'service.name')?.[1] || 'unknown_service';
    for (const sl of rl.scopeLogs ?? []) {
      for (const r of sl.logRecords ?? []) {
        const raw = r.timeUnixNano && String(r.timeUnixNano) !== '0' ? r.timeUnixNano : r.observedTimeUnixNano;
        const [us, ns] = splitNanos(raw);
        const spanId = String(r.spanId ?? '').toLowerCase();
        const severity = Number(r.severityNumber ?? 0);
        out.push({
          service,
          timeMs: us / 1000 + ns / 1e6,
          time: us - baseUs + (ns - baseNs) / 1000,
          severity,
          level: r.severityText || severityRange(severity).toUpperCase(),
          range: severityRange(severity),
          body: valueText(r.body),
          attrs: attrs(r.attributes),
          traceId: String(r.traceId ?? '').toLowerCase(),
          spanId,
          span: trace && spanId ? (trace.byId.get(spanId) ?? -1) : -1,
          eventName: r.eventName ?? '',
        });
      }
    }
  }
  return out.sort((a, b) => a.timeMs - b.timeMs);
}

/**
 * Builds the trace. Span times are microseconds relative to the earliest span start
 * (`startMs` is that instant in epoch milliseconds). Spans whose parent is not in the trace
 * (or who form a parent cycle) are roots. `order` lists span indices depth first, children
 * by start time.
 */
export function buildTrace(json) {
  const raw = [];
  for (const rs of json.resourceSpans ?? []) {
    const resource = attrs(rs.resource?.attributes);
    const service = resource.find(([k]) => k === 'service.name')?.[1] || 'unknown_service';
    for (const ss of rs.scopeSpans ?? []) {
      const scope = { name: ss.scope?.name ?? '', version: ss.scope?.version ?? '', attrs: attrs(ss.scope?.attributes) };
      for (const sp of ss.spans ?? []) raw.push({ sp, resource, service, scope });
    }
  }
  // The earliest start, as exact integers (microseconds and the nanoseconds beyond them).
  let baseUs = Infinity;
  let baseNs = 0;
  const times = raw.map(({ sp }) => {
    const s = splitNanos(sp.startTimeUnixNano);
    const e = splitNanos(sp.endTimeUnixNano);
    if (s[0] < baseUs || (s[0] === baseUs && s[1] < baseNs)) [baseUs, baseNs] = s;
    return [s, e];
  });
  if (!Number.isFinite(baseUs)) baseUs = 0;
  const rel = ([us, ns]) => us - baseUs + (ns - baseNs) / 1000;
  const spans = raw.map(({ sp, resource, service, scope }, i) => {
    const [s, e] = times[i];
    const start = rel(s);
    const end = Math.max(start, rel(e));
    const status = { code: Number(sp.status?.code ?? 0), message: sp.status?.message ?? '' };
    return {
      i,
      id: String(sp.spanId ?? '').toLowerCase(),
      parentId: String(sp.parentSpanId ?? '').toLowerCase(),
      traceId: String(sp.traceId ?? '').toLowerCase(),
      name: String(sp.name ?? ''),
      kind: KINDS[Number(sp.kind ?? 0)] ?? 'unspecified',
      service,
      resource,
      scope,
      attrs: attrs(sp.attributes),
      events: (sp.events ?? []).map((ev) => {
        return { name: String(ev.name ?? ''), time: rel(splitNanos(ev.timeUnixNano)), attrs: attrs(ev.attributes) };
      }),
      links: (sp.links ?? []).map((l) => ({
        traceId: String(l.traceId ?? '').toLowerCase(),
        spanId: String(l.spanId ?? '').toLowerCase(),
        attrs: attrs(l.attributes),
      })),
      traceState: sp.traceState ?? '',
      status,
      error: status.code === 2,
      start,
      end,
      parent: -1,
      children: [],
      depth: 0,
    };
  });
  const byId = new Map();
  for (const s of spans) if (s.id && !byId.has(s.id)) byId.set(s.id, s.i);
  for (const s of spans) {
    const p = s.parentId ? byId.get(s.parentId) : undefined;
    if (p !== undefined && p !== s.i) {
      s.parent = p;
      spans[p].children.push(s.i);
    }
  }
  const byStart = (a, b) => spans[a].start - spans[b].start || (spans[a].id < spans[b].id ? -1 : 1);
  for (const s of spans) s.children.sort(byStart);
  // Depth-first order from the roots; spans in a parent cycle are reached from none, so
  // the earliest of each such group becomes a root.
  const roots = spans.filter((s) => s.parent < 0).map((s) => s.i).sort(byStart);
  const order = [];
  const seen = new Uint8Array(spans.length);
  const walk = (root) => {
    const stack = [root];
    spans[root].depth = 0;
    while (stack.length) {
      const i = stack.pop();
      if (seen[i]) continue;
      seen[i] = 1;
      order.push(i);
      const s = spans[i];
      for (let c = s.children.length - 1; c >= 0; c--) {
        const child = spans[s.children[c]];
        child.depth = s.depth + 1;
        stack.push(child.i);
      }
    }
  };
  for (const r of roots) walk(r);
  if (order.length < spans.length) {
    for (const i of [...spans.keys()].sort(byStart)) {
      if (seen[i]) continue;
      const s = spans[i];
      if (s.parent >= 0) spans[s.parent].children = spans[s.parent].children.filter((c) => c !== i);
      s.parent = -1;
      roots.push(i);
      walk(i);
    }
  }
  let end = 0;
  let depth = 0;
  let errors = 0;
  const services = new Map();
  for (const s of spans) {
    if (s.end > end) end = s.end;
    if (s.depth + 1 > depth) depth = s.depth + 1;
    if (s.error) errors++;
    const svc = services.get(s.service) ?? { name: s.service, spans: 0, errors: 0 };
    svc.spans++;
    if (s.error) svc.errors++;
    services.set(s.service, svc);
  }
  const first = roots[0] !== undefined ? spans[roots[0]] : undefined;
  return {
    traceId: String(json.traceId ?? spans[0]?.traceId ?? '').toLowerCase(),
    spans,
    roots,
    order,
    byId,
    startMs: baseUs / 1000 + baseNs / 1e6,
    // The earliest start as exact integers, for placing other times (log records) on it.
    base: [baseUs, baseNs],
    duration: end,
    depth,
    errors,
    services: [...services.values()].sort((a, b) => b.spans - a.spans || (a.name < b.name ? -1 : 1)),
    rootService: first?.service ?? '',
    rootName: first?.name ?? '',
    // Chain integrity as the server reports it (null when the server does not analyse).
    integrity: json.integrity ?? null,
  };
}

/**
 * The critical path: the chain of work that decided when the trace ended. Walking back from
 * the latest end, each span hands over to the child that finished last before the moment
 * reached (children first get the end of their own latest descendant, so an async child
 * that outlives its parent is on the path when it is what the trace waited for); the span's
 * own time between children is its share. Returns span index → `[[from, to], ...]` of
 * self time on the path (may be empty for a span the path only passes through).
 */
export function criticalPath(trace) {
  const { spans, order, roots } = trace;
  const effEnd = new Float64Array(spans.length);
  for (let k = order.length - 1; k >= 0; k--) {
    const s = spans[order[k]];
    let e = s.end;
    for (const c of s.children) if (effEnd[c] > e) e = effEnd[c];
    effEnd[s.i] = e;
  }
  const byEffEnd = (list) => [...list].sort((a, b) => effEnd[b] - effEnd[a] || spans[b].start - spans[a].start);
  const path = new Map();
  const addSelf = (i, from, to) => {
    if (i < 0) return;
    const s = spans[i];
    const a = Math.max(from, s.start);
    const b = Math.min(to, s.end);
    if (b > a) path.get(i).push([a, b]);
  };
  let traceEnd = 0;
  for (const r of roots) traceEnd = Math.max(traceEnd, effEnd[r]);
  // Frames: span index (-1: the trace itself, whose children are the roots), the moment
  // still to be explained, and a cursor into the children by end, latest first.
  const stack = [{ i: -1, t: traceEnd, lo: -Infinity, kids: byEffEnd(roots), p: 0 }];
  while (stack.length) {
    const f = stack[stack.length - 1];
    while (f.p < f.kids.length && effEnd[f.kids[f.p]] > f.t) f.p++;
    if (f.p < f.kids.length && f.t > f.lo) {
      const k = f.kids[f.p++];
      addSelf(f.i, effEnd[k], f.t);
      f.t = spans[k].start;
      path.set(k, []);
      stack.push({ i: k, t: effEnd[k], lo: spans[k].start, kids: byEffEnd(spans[k].children), p: 0 });
    } else {
      addSelf(f.i, f.lo, f.t);
      stack.pop();
    }
  }
  for (const segs of path.values()) segs.reverse();
  return path;
}

/**
 * Two traces compared by structure: spans keyed by their service and name and those of
 * their ancestors. Each row says how often the key occurs in each trace and its mean
 * duration, and what changed: `added` (only in b), `missing` (only in a), `more`/`fewer`,
 * `slower`/`faster` (mean duration ±10 % and ≥ 1 µs), or `same`.
 */
export function compareTraces(a, b) {
  const rows = new Map();
  const collect = (trace, side) => {
    const keys = new Array(trace.spans.length);
    for (const i of trace.order) {
      const s = trace.spans[i];
      const label = `${s.service}\u0000${s.name}`;
      const parentKey = s.parent >= 0 ? keys[s.parent] : '';
      const key = `${parentKey}\u0001${label}`;
      keys[i] = key;
      let row = rows.get(key);
      if (!row) {
        row = { key, parentKey, depth: s.depth, service: s.service, name: s.name,
          a: { count: 0, total: 0, errors: 0 }, b: { count: 0, total: 0, errors: 0 } };
        rows.set(key, row);
      }
      row[side].count++;
      row[side].total += s.end - s.start;
      if (s.error) row[side].errors++;
    }
  };
  collect(a, 'a');
  collect(b, 'b');
  const children = new Map();
  for (const row of rows.values()) {
    const list = children.get(row.parentKey) ?? [];
    list.push(row);
    children.set(row.parentKey, list);
  }
  const out = [];
  const stack = [...(children.get('') ?? [])].reverse();
  while (stack.length) {
    const row = stack.pop();
    const meanA = row.a.count ? row.a.total / row.a.count : 0;
    const meanB = row.b.count ? row.b.total / row.b.count : 0;
    let change = 'same';
    if (!row.a.count) change = 'added';
    else if (!row.b.count) change = 'missing';
    else if (row.b.count > row.a.count) change = 'more';
    else if (row.b.count < row.a.count) change = 'fewer';
    else if (meanB >= meanA * 1.1 && meanB - meanA >= 1) change = 'slower';
    else if (meanB <= meanA * 0.9 && meanA - meanB >= 1) change = 'faster';
    out.push({ ...row, meanA, meanB, change });
    stack.push(...[...(children.get(row.key) ?? [])].reverse());
  }
  return out;
}
