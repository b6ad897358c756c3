// The trace view: header, minimap, a virtualised waterfall (only the rows in view are in
// the DOM, so 100,000 spans scroll like 100) with the critical path, and the span details.

import { getJSON, ApiError, openJSON } from './api.js';
import { h, notice, copyButton } from './dom.js';
import { duration, dateTime, serviceColor, count } from './format.js';
import { buildTrace, buildLogs, criticalPath } from './model.js';
import { navigate } from './app.js';

const ROW = 24; // px per row; CSS `.row` uses the same height
const HEAD = 26; // px of the sticky timeline head (CSS `.timeline-head`)
const OVERSCAN = 12;
const MAX_INDENT = 40; // deeper spans indent no further (the depth is still shown)

export function mount(main, { id }, url) {
  const abort = new AbortController();
  let view = null;
  main.replaceChildren(h('p', { class: 'muted loading' }, `Loading trace ${id}…`));
  performance.mark('strand:trace-requested');
  // The trace's log records come beside it; a server without logs (or a failed read) only
  // means no log markers.
  const logs = getJSON('/api/v1/logs', { traceId: id }, { signal: abort.signal }).catch(() => null);
  getJSON(`/api/v1/traces/${encodeURIComponent(id)}`, {}, { signal: abort.signal })
    .then(async (json) => {
      performance.mark('strand:trace-fetched');
      const trace = buildTrace(json);
      const logsJson = await logs;
      view = new TraceView(main, trace, url.searchParams, logsJson ? buildLogs(logsJson, trace) : []);
      if (json.truncated) main.prepend(notice('empty', 'Trace cut short', json.truncated.message));
      document.title = `Strand · ${trace.rootService}: ${trace.rootName}`;
      performance.mark('strand:trace-interactive');
      performance.measure('strand:trace', 'strand:trace-requested', 'strand:trace-interactive');
      document.body.dataset.traceReady = trace.traceId;
    })
    .catch((e) => {
      if (e.name === 'AbortError') return;
      if (e instanceof ApiError && e.status === 404) {
        const box = notice('empty', 'Trace not found', `No trace ${id} is stored in this Strand.`,
          'It may be older than the retention period, dropped by tail sampling, or its spans may not have arrived yet.',
          h('p', null, h('a', { href: '/search' }, 'Search for traces')));
        main.replaceChildren(box);
        // Log records are kept whatever the sampler decided: point at them when there are any.
        logs.then((json) => {
          const n = json ? buildLogs(json).length : 0;
          if (n) box.append(h('p', { class: 'trace-logs-link' }, h('a', { href: `/logs?traceId=${encodeURIComponent(id)}` }, `Its ${count(n)} log records are stored`)));
        });
      } else if (e instanceof ApiError && e.status === 400) {
        main.replaceChildren(notice('error', 'Not a trace id', e.message,
          'A trace id is 32 hexadecimal characters, such as 4bf92f3577b34da6a3ce929d0e0e4736.'));
      } else {
        main.replaceChildren(notice('error', 'The trace could not be loaded', e.message));
      }
    });
  return { destroy: () => { abort.abort(); view?.destroy(); } };
}

/** A finding kind as words. */
export const KIND_NAMES = {
  missing_parent: 'Missing parent',
  missing_root: 'Missing root',
  client_without_server: 'Client without server',
  producer_without_consumer: 'Producer without consumer',
  consumer_new_root: 'Consumer started a new trace',
  unrooted_work: 'Work without a request',
  clock_skew: 'Clock skew',
};

class TraceView {
  constructor(main, trace, params, logs = []) {
    this.trace = trace;
    this.spans = trace.spans;
    // Span index → the chain-integrity findings naming it.
    this.findings = new Map();
    for (const f of trace.integrity?.findings ?? []) {
      for (const id of f.spanIds) {
        const i = trace.byId.get(id);
        if (i !== undefined) this.findings.set(i, [...(this.findings.get(i) ?? []), f]);
      }
    }
    this.critical = criticalPath(trace);
    // Log records, all and by span index.
    this.logs = logs;
    this.logsBySpan = new Map();
    for (const l of logs) {
      if (l.span < 0) continue;
      const list = this.logsBySpan.get(l.span);
      if (list) list.push(l);
      else this.logsBySpan.set(l.span, [l]);
    }
    this.collapsed = new Uint8Array(this.spans.length);
    this.selected = -1;
    this.matches = null; // Set of span indices matching the find box, or null
    this.frame = 0;
    this.visible = [];
    this.buildDom(main);
    this.recompute();
    this.onKey = (e) => this.key(e);
    document.addEventListener('keydown', this.onKey);
    this.onResize = () => { this.drawMinimap(); this.renderRows(); };
    window.addEventListener('resize', this.onResize);
    window.addEventListener('strand:theme', this.onResize);
    const find = params.get('uiFind');
    if (find) { this.findInput.value = find; this.find(find); }
    const wanted = params.get('span')?.toLowerCase();
    if (wanted && trace.byId.has(wanted)) this.select(trace.byId.get(wanted), { center: true });
  }

  destroy() {
    document.removeEventListener('keydown', this.onKey);
    window.removeEventListener('resize', this.onResize);
    window.removeEventListener('strand:theme', this.onResize);
    cancelAnimationFrame(this.frame);
  }

  buildDom(main) {
    const t = this.trace;
    const header = h('header', { class: 'trace-header' },
      h('h1', null, h('span', { class: 'svc-dot', style: { background: serviceColor(t.rootService) } }),
        `${t.rootService}: ${t.rootName}`),
      h('div', { class: 'trace-id' }, 'Trace ', h('code', null, t.traceId), copyButton(t.traceId),
        h('a', { href: `/compare?a=${t.traceId}` }, 'Compare…'),
        h('a', { href: `/api/v1/traces/${t.traceId}`, target: '_blank', rel: 'noopener',
          onclick: openJSON(`/api/v1/traces/${t.traceId}`) }, 'JSON')),
      h('dl', { class: 'facts' },
        fact('Started', dateTime(t.startMs)),
        fact('Duration', duration(t.duration)),
        fact('Services', String(t.services.length)),
        fact('Depth', String(t.depth)),
        fact('Spans', count(t.spans.length)),
        fact('Errors', count(t.errors), t.errors ? 'errors' : null),
        t.integrity ? fact('Chain', chainState(t.integrity), broken(t.integrity) ? 'errors' : null) : null),
      h('div', { class: 'chips' }, t.services.map((s) => h('span', {
        class: `chip${s.errors ? ' chip-error' : ''}`, style: { borderColor: serviceColor(s.name) },
      }, `${s.name} (${s.spans})`))));

    this.findInput = h('input', { type: 'search', placeholder: 'Find in trace', 'aria-label': 'Find spans', spellcheck: 'false' });
    this.findCount = h('span', { class: 'muted find-count' });
    let findTimer = 0;
    this.findInput.addEventListener('input', () => {
      clearTimeout(findTimer);
      findTimer = setTimeout(() => this.find(this.findInput.value), 120);
    });
    this.findInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); this.nextMatch(e.shiftKey ? -1 : 1); }
    });
    const cp = h('input', { type: 'checkbox', checked: true });
    cp.addEventListener('change', () => this.root.classList.toggle('hide-critical', !cp.checked));
    const toolbar = h('div', { class: 'trace-toolbar' },
      button('Collapse all', () => this.collapseAll(true)),
      button('Expand all', () => this.collapseAll(false)),
      h('label', { class: 'check', title: 'The chain of spans that decided when the trace ended' },
        cp, ' Critical path'),
      this.findInput, this.findCount,
      this.logs.length ? button(`Logs (${count(this.logs.length)})`, () => {
        this.logsDetails.open = true;
        this.logsDetails.scrollIntoView({ block: 'nearest' });
      }) : null,
      h('span', { class: 'muted keys' }, '↑↓ move · ←→ fold · Enter fold · Esc close'));
    this.logsDetails = this.logsPanel();

    this.canvas = h('canvas', { class: 'minimap-canvas', 'aria-hidden': 'true' });
    this.viewport = h('div', { class: 'minimap-viewport' });
    const minimap = h('div', { class: 'minimap', title: 'Minimap: click or drag to scroll' }, this.canvas, this.viewport);
    const scrollTo = (e) => {
      const r = minimap.getBoundingClientRect();
      const frac = Math.min(1, Math.max(0, (e.clientY - r.top) / r.height));
      this.scroller.scrollTop = frac * this.visible.length * ROW - this.scroller.clientHeight / 2;
    };
    minimap.addEventListener('pointerdown', (e) => {
      minimap.setPointerCapture(e.pointerId);
      scrollTo(e);
      const move = (ev) => scrollTo(ev);
      minimap.addEventListener('pointermove', move);
      minimap.addEventListener('pointerup', () => minimap.removeEventListener('pointermove', move), { once: true });
    });

    const ticks = h('div', { class: 'ticks' });
    for (let k = 0; k <= 4; k++) {
      ticks.append(h('span', { style: { left: `${k * 25}%` } }, duration((t.duration * k) / 4)));
    }
    // Inside the scrolling box (sticky), so the ticks line up with the lanes below.
    // The name column can be widened or narrowed by dragging its edge (or with ←/→ on it);
    // the width is remembered for the next trace.
    const resizer = h('div', {
      class: 'col-resizer', role: 'separator', tabindex: 0, 'aria-orientation': 'vertical', 'aria-valuemin': 120,
      'aria-label': 'Resize the name column', title: 'Drag to resize the name column',
    });
    const timelineHead = h('div', { class: 'timeline-head' },
      h('div', { class: 'name-col' }, 'Service & operation', resizer), ticks);

    this.rows = h('div', { class: 'rows', role: 'tree', 'aria-label': 'Spans' });
    this.scroller = h('div', { class: 'waterfall', tabindex: 0 }, timelineHead, this.rows);
    // The CSS caps the column at 85 % of the waterfall, so a width saved on a wide screen
    // never squeezes the timeline away on a narrow one.
    const setNameWidth = (px) => {
      const width = Math.round(Math.min(Math.max(px, 120), this.scroller.clientWidth * 0.85));
      this.scroller.style.setProperty('--name-w', `${width}px`);
      resizer.setAttribute('aria-valuenow', String(width));
      return width;
    };
    const save = (width) => localStorage.setItem('strand.nameWidth', String(width));
    const saved = Number(localStorage.getItem('strand.nameWidth'));
    if (saved > 0) this.scroller.style.setProperty('--name-w', `${saved}px`);
    const currentWidth = () => resizer.parentElement.getBoundingClientRect().width;
    resizer.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      resizer.setPointerCapture(e.pointerId);
      const [x0, w0] = [e.clientX, currentWidth()];
      let width = w0;
      const move = (ev) => { if (ev.pointerId === e.pointerId) width = setNameWidth(w0 + ev.clientX - x0); };
      resizer.addEventListener('pointermove', move);
      // After pointerup and pointercancel alike: the drag ends and the width is kept.
      resizer.addEventListener('lostpointercapture', () => {
        resizer.removeEventListener('pointermove', move);
        save(width);
      }, { once: true });
    });
    resizer.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowLeft' && e.key !== 'ArrowRight') return;
      e.preventDefault();
      e.stopPropagation();
      save(setNameWidth(currentWidth() + (e.key === 'ArrowRight' ? 24 : -24)));
    });
    this.scroller.addEventListener('scroll', () => this.schedule());
    this.rows.addEventListener('click', (e) => this.click(e));
    this.detail = h('aside', { class: 'detail', hidden: true, 'aria-label': 'Span details' });
    this.root = h('div', { class: 'trace-page' }, header, this.integrityBanner(), toolbar, this.logsDetails, minimap,
      h('div', { class: 'trace-body' }, this.scroller, this.detail));
    main.replaceChildren(this.root);
  }

  /** The rows to show: depth-first order, skipping the descendants of collapsed spans. */
  recompute() {
    const { spans } = this;
    const out = [];
    const stack = [...this.trace.roots].reverse();
    while (stack.length) {
      const i = stack.pop();
      out.push(i);
      if (!this.collapsed[i]) {
        const kids = spans[i].children;
        for (let c = kids.length - 1; c >= 0; c--) stack.push(kids[c]);
      }
    }
    this.visible = out;
    this.position = new Int32Array(spans.length).fill(-1);
    out.forEach((i, k) => { this.position[i] = k; });
    this.rows.style.height = `${out.length * ROW}px`;
    this.drawMinimap();
    this.renderRows();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.renderRows();
    });
  }

  renderRows() {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(this.visible.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    const rows = [];
    for (let k = first; k < last; k++) rows.push(this.row(this.visible[k], k));
    this.rows.replaceChildren(...rows);
    const total = this.visible.length * ROW || 1;
    this.viewport.style.top = `${(top / total) * 100}%`;
    this.viewport.style.height = `${Math.max(2, Math.min(100, (height / total) * 100))}%`;
  }

  row(i, k) {
    const s = this.spans[i];
    const dur = this.trace.duration || 1;
    const segs = this.critical.get(i);
    const cls = ['row'];
    if (s.error) cls.push('error');
    if (segs) cls.push('critical');
    if (i === this.selected) cls.push('selected');
    if (this.matches?.has(i)) cls.push('match');
    const kids = s.children.length;
    const toggle = kids
      ? h('button', { type: 'button', class: 'toggle', 'aria-label': this.collapsed[i] ? 'Expand' : 'Collapse', dataset: { toggle: i } },
        this.collapsed[i] ? '▸' : '▾')
      : h('span', { class: 'toggle' });
    const spanDur = s.end - s.start;
    const bar = h('div', {
      class: 'bar',
      style: { left: `${(s.start / dur) * 100}%`, width: `max(1px, ${(spanDur / dur) * 100}%)`, background: s.error ? null : serviceColor(s.service) },
    });
    if (segs && spanDur > 0) {
      for (const [a, b] of segs) {
        bar.append(h('div', { class: 'cp', style: { left: `${((a - s.start) / spanDur) * 100}%`, width: `${((b - a) / spanDur) * 100}%` } }));
      }
    }
    // The duration goes right of the bar, else left of it, else inside it.
    const endPct = (s.end / dur) * 100;
    const startPct = (s.start / dur) * 100;
    const label = endPct < 80 ? { left: `calc(${endPct}% + 4px)` }
      : startPct > 20 ? { right: `calc(${100 - startPct}% + 4px)` } : { left: `calc(${startPct}% + 4px)` };
    return h('div', {
      class: cls.join(' '), role: 'treeitem', 'aria-level': s.depth + 1, 'aria-selected': String(i === this.selected),
      'aria-expanded': kids ? String(!this.collapsed[i]) : null,
      style: { top: `${k * ROW}px` }, dataset: { i, spanId: s.id },
    },
    h('div', { class: 'name-col', style: { paddingLeft: `${4 + Math.min(s.depth, MAX_INDENT) * 12}px` } },
      toggle,
      h('span', { class: 'svc-dot', style: { background: serviceColor(s.service) } }),
      h('span', { class: 'svc' }, s.service),
      h('span', { class: 'op' }, s.name),
      s.depth > MAX_INDENT ? h('span', { class: 'badge' }, `depth ${s.depth}`) : null,
      kids && this.collapsed[i] ? h('span', { class: 'badge' }, `+${count(kids)}`) : null,
      s.links.length ? h('button', { type: 'button', class: 'badge link-badge', title: 'Span links', dataset: { link: i } }, `⇄ ${s.links.length}`) : null,
      s.parent < 0 && s.parentId ? h('span', { class: 'badge detached-badge', title: `Parent ${s.parentId} is not in this trace: this subtree is detached` }, 'detached') : null,
      this.findings.has(i) ? h('span', { class: 'badge chain-badge', title: this.findings.get(i).map((f) => f.message).join('\n') },
        `⚠ ${this.findings.get(i).map((f) => f.kind).join(', ')}`) : null,
      s.error ? h('span', { class: 'badge error-badge', title: s.status.message || 'error' }, 'error') : null,
      this.logsBySpan.has(i) ? h('span', { class: 'badge log-badge', title: 'Log records written in this span' }, `≡ ${this.logsBySpan.get(i).length}`) : null),
    h('div', { class: 'lane' }, bar, this.logMarks(i, dur),
      h('span', { class: `span-dur${endPct >= 80 && startPct <= 20 ? ' inside' : ''}`, style: label }, duration(spanDur))));
  }

  /** A tick on the lane at each of span `i`'s log records (at most 100), coloured by severity. */
  logMarks(i, dur) {
    const logs = this.logsBySpan.get(i);
    if (!logs) return null;
    return logs.slice(0, 100).map((l) => h('span', {
      class: `log-mark sev-${l.range}`,
      style: { left: `${(Math.max(0, Math.min(l.time, dur)) / dur) * 100}%` },
      title: `${l.level}: ${l.body}`,
    }));
  }

  /** The trace's log records: time, severity, service, body, attributes, and a jump to the span. */
  logsPanel() {
    const rows = this.logs.map((l) => logRow(l, this.trace, l.span >= 0
      ? button(this.spans[l.span].name, () => this.select(l.span, { center: true })) : h('span', { class: 'muted' }, 'no span')));
    return h('details', { class: 'section trace-logs', id: 'trace-logs' },
      h('summary', null, `Logs of this trace (${count(this.logs.length)})`),
      this.logs.length ? h('table', { class: 'logs' }, h('tbody', null, rows))
        : h('p', { class: 'muted' }, 'No log records carry this trace id.'));
  }

  click(e) {
    const toggle = e.target.closest('[data-toggle]');
    if (toggle) { this.toggle(Number(toggle.dataset.toggle)); return; }
    const link = e.target.closest('[data-link]');
    if (link) { this.follow(this.spans[Number(link.dataset.link)].links[0]); return; }
    const row = e.target.closest('.row');
    if (row) this.select(Number(row.dataset.i));
  }

  toggle(i, collapse = !this.collapsed[i]) {
    if (!this.spans[i].children.length) return;
    this.collapsed[i] = collapse ? 1 : 0;
    this.recompute();
  }

  collapseAll(collapse) {
    for (const s of this.spans) this.collapsed[s.i] = collapse && s.children.length && s.parent >= 0 ? 1 : 0;
    this.recompute();
  }

  /** Selects span `i`, unfolding its ancestors, and shows its details. */
  select(i, { center = false } = {}) {
    let unfolded = false;
    for (let p = this.spans[i].parent; p >= 0; p = this.spans[p].parent) {
      if (this.collapsed[p]) { this.collapsed[p] = 0; unfolded = true; }
    }
    if (unfolded) this.recompute();
    this.selected = i;
    // `y` is the row's top within the rows; the sticky timeline head covers the top
    // HEAD pixels of the box.
    const y = this.position[i] * ROW;
    const { scrollTop, clientHeight } = this.scroller;
    if (center) this.scroller.scrollTop = y - clientHeight / 2;
    else if (y < scrollTop) this.scroller.scrollTop = y;
    else if (y + ROW + HEAD > scrollTop + clientHeight) this.scroller.scrollTop = y + ROW + HEAD - clientHeight;
    const url = new URL(window.location.href);
    url.searchParams.set('span', this.spans[i].id);
    history.replaceState(null, '', url);
    this.renderRows();
    this.renderDetail();
  }

  unselect() {
    this.selected = -1;
    const url = new URL(window.location.href);
    url.searchParams.delete('span');
    history.replaceState(null, '', url);
    this.detail.hidden = true;
    this.renderRows();
  }

  follow(link) {
    if (!link) return;
    if (link.traceId === this.trace.traceId && this.trace.byId.has(link.spanId)) {
      this.select(this.trace.byId.get(link.spanId), { center: true });
    } else {
      navigate(`/trace/${link.traceId}?span=${link.spanId}`);
    }
  }

  key(e) {
    if (e.target.closest?.('input, select, textarea') || e.metaKey || e.ctrlKey || e.altKey) return;
    const k = this.selected >= 0 ? this.position[this.selected] : -1;
    const move = (to) => {
      e.preventDefault();
      if (this.visible.length) this.select(this.visible[Math.max(0, Math.min(this.visible.length - 1, to))]);
    };
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / ROW) - 1);
    switch (e.key) {
      case 'ArrowDown': case 'j': return move(k + 1);
      case 'ArrowUp': case 'k': return move(k < 0 ? 0 : k - 1);
      case 'PageDown': return move(k + page);
      case 'PageUp': return move(k - page);
      case 'Home': return move(0);
      case 'End': return move(this.visible.length - 1);
      case 'ArrowRight': case 'l':
        if (this.selected < 0) return undefined;
        e.preventDefault();
        if (this.collapsed[this.selected]) return this.toggle(this.selected, false);
        return move(k + (this.spans[this.selected].children.length ? 1 : 0));
      case 'ArrowLeft': case 'h': {
        if (this.selected < 0) return undefined;
        e.preventDefault();
        const s = this.spans[this.selected];
        if (s.children.length && !this.collapsed[s.i]) return this.toggle(s.i, true);
        if (s.parent >= 0) this.select(s.parent);
        return undefined;
      }
      case 'Enter':
        if (this.selected >= 0) { e.preventDefault(); this.toggle(this.selected); }
        return undefined;
      case 'Escape':
        if (this.selected >= 0) this.unselect();
        return undefined;
      case '/':
        e.preventDefault();
        this.findInput.focus();
        return undefined;
      default:
        return undefined;
    }
  }

  find(text) {
    const needle = text.trim().toLowerCase();
    if (!needle) {
      this.matches = null;
      this.findCount.textContent = '';
    } else {
      const has = (s) => s.toLowerCase().includes(needle);
      this.matches = new Set(this.spans.filter((s) => has(s.name) || has(s.service) || s.id === needle ||
        s.attrs.some(([k, v]) => has(k) || has(v))).map((s) => s.i));
      this.findCount.textContent = `${count(this.matches.size)} match${this.matches.size === 1 ? '' : 'es'}`;
    }
    this.drawMinimap();
    this.renderRows();
  }

  nextMatch(step) {
    if (!this.matches?.size) return;
    const order = this.trace.order.filter((i) => this.matches.has(i));
    const at = order.indexOf(this.selected);
    this.select(order[(at + step + order.length) % order.length], { center: true });
  }

  drawMinimap() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 800;
    const hgt = canvas.clientHeight || 48;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(hgt * ratio);
    const ctx = canvas.getContext('2d');
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, w, hgt);
    const n = this.visible.length || 1;
    const dur = this.trace.duration || 1;
    const rowH = Math.max(hgt / n, 0.5);
    const errorColor = getComputedStyle(document.documentElement).getPropertyValue('--error').trim() || '#d62728';
    let last = '';
    for (let k = 0; k < this.visible.length; k++) {
      const s = this.spans[this.visible[k]];
      const color = s.error ? errorColor : serviceColor(s.service);
      if (color !== last) { ctx.fillStyle = color; last = color; }
      ctx.fillRect((s.start / dur) * w, (k / n) * hgt, Math.max(1, ((s.end - s.start) / dur) * w), rowH);
    }
  }

  /** The chain-integrity findings above the waterfall, each with a link to its span and to
   * the trace holding the other half of the chain. */
  integrityBanner() {
    const integrity = this.trace.integrity;
    if (!integrity?.findings.length) return null;
    const items = integrity.findings.map((f) => {
      const at = this.trace.byId.get(f.spanIds[0]);
      const other = f.relatedTraceId
        ? h('a', { class: 'related', href: `/trace/${f.relatedTraceId}${f.relatedSpanId ? `?span=${f.relatedSpanId}` : ''}` },
          f.kind === 'unrooted_work' ? 'likely request' : 'other half')
        : null;
      const more = (f.candidates ?? []).slice(1).map((c, n) => h('a', { class: 'related', href: `/trace/${c}` }, `candidate ${n + 2}`));
      return h('li', { class: `finding finding-${f.kind}`, dataset: { kind: f.kind } },
        h('strong', null, KIND_NAMES[f.kind] ?? f.kind),
        f.services.some(Boolean) ? h('span', { class: 'muted' }, ` ${f.services.filter(Boolean).join(' → ')}`) : null,
        f.confidence === 'low' ? h('span', { class: 'badge' }, 'low confidence') : null,
        h('p', null, f.message),
        h('div', { class: 'finding-links' },
          at !== undefined ? button('Show span', () => this.select(at, { center: true })) : null, other, ...more));
    });
    const title = broken(integrity) ? `Broken chain: ${integrity.findings.length === 1 ? '1 finding' : `${integrity.findings.length} findings`}`
      : 'Clock skew';
    return h('section', { class: `integrity-banner${broken(integrity) ? ' broken' : ''}`, 'aria-label': 'Chain integrity' },
      h('h2', null, title, integrity.settled ? null : h('span', { class: 'muted' }, ' · not settled yet: spans may still arrive')),
      h('ul', null, items));
  }

  renderDetail() {
    const s = this.spans[this.selected];
    const t = this.trace;
    const parent = s.parent >= 0 ? this.spans[s.parent] : null;
    const segs = this.critical.get(s.i);
    const onPath = segs ? segs.reduce((sum, [a, b]) => sum + b - a, 0) : 0;
    const status = s.status.code === 2 ? 'Error' : s.status.code === 1 ? 'OK' : 'Unset';
    const close = button('×', () => this.unselect());
    close.setAttribute('aria-label', 'Close details');
    const gotoSpan = (target, text) => button(text, () => this.select(target.i, { center: true }));
    this.detail.replaceChildren(
      h('div', { class: 'detail-head' },
        h('h2', null, h('span', { class: 'svc-dot', style: { background: serviceColor(s.service) } }), s.service),
        close),
      h('p', { class: 'detail-op' }, s.name),
      h('dl', { class: 'kv' },
        fact('Span ID', h('span', null, h('code', null, s.id), copyButton(s.id))),
        fact('Parent', parent ? gotoSpan(parent, `${parent.service}: ${parent.name}`)
          : s.parentId ? h('span', null, h('code', null, s.parentId), ' (not in this trace)') : 'none (root)'),
        fact('Trace ID', h('span', null, h('code', null, t.traceId), copyButton(t.traceId))),
        fact('Kind', s.kind),
        fact('Start', `+${duration(s.start)} (${dateTime(t.startMs + s.start / 1000)})`),
        fact('Duration', duration(s.end - s.start)),
        fact('Status', s.status.message ? `${status}: ${s.status.message}` : status, s.error ? 'errors' : null),
        fact('Critical path', segs ? `${duration(onPath)} of this span's time` : 'not on the critical path'),
        s.traceState ? fact('Trace state', h('code', null, s.traceState)) : null,
        fact('Children', String(s.children.length))),
      this.findings.has(s.i) ? section('Chain integrity', this.findings.get(s.i).length, h('ul', { class: 'span-findings' },
        this.findings.get(s.i).map((f) => h('li', null, h('strong', null, KIND_NAMES[f.kind] ?? f.kind), ': ', f.message)))) : null,
      section('Logs', this.logsBySpan.get(s.i)?.length ?? 0, h('table', { class: 'logs' }, h('tbody', null,
        (this.logsBySpan.get(s.i) ?? []).map((l) => logRow(l, t, null))))),
      section('Span attributes', s.attrs.length, table(s.attrs)),
      section('Resource attributes', s.resource.length, table(s.resource)),
      section('Scope', 1, h('p', null, h('code', null, `${s.scope.name || '(unnamed)'}${s.scope.version ? ` ${s.scope.version}` : ''}`)),
        s.scope.attrs.length ? table(s.scope.attrs) : null),
      section('Events', s.events.length, h('ol', { class: 'events' }, s.events.map((ev) => h('li', null,
        h('div', null, h('span', { class: 'muted' }, `+${duration(ev.time - s.start)}`), ' ', h('strong', null, ev.name)),
        ev.attrs.length ? table(ev.attrs) : null)))),
      section('Links', s.links.length, h('ol', { class: 'links' }, s.links.map((l) => {
        const local = l.traceId === t.traceId ? t.byId.get(l.spanId) : undefined;
        const target = local !== undefined
          ? gotoSpan(this.spans[local], `${this.spans[local].service}: ${this.spans[local].name}`)
          : h('a', { href: `/trace/${encodeURIComponent(l.traceId)}?span=${encodeURIComponent(l.spanId)}` }, `trace ${l.traceId.slice(0, 8)}… span ${l.spanId}`);
        return h('li', null, target, l.attrs.length ? table(l.attrs) : null);
      }))));
    this.detail.hidden = false;
  }
}

/** One log record as a table row: offset in the trace, severity, service, body and
 * attributes, then `extra` (a jump to its span). */
export function logRow(l, trace, extra) {
  return h('tr', { class: `log sev-${l.range}`, dataset: { spanId: l.spanId } },
    h('td', { class: 'muted log-time', title: dateTime(l.timeMs) }, trace ? `+${duration(l.time)}` : dateTime(l.timeMs)),
    h('td', null, h('span', { class: `sev sev-${l.range}` }, l.level)),
    h('td', { class: 'log-svc' }, l.service),
    h('td', { class: 'log-body' }, l.body,
      l.attrs.length ? h('div', { class: 'log-attrs muted' }, l.attrs.map(([k, v]) => `${k}=${v}`).join('  ')) : null),
    extra ? h('td', null, extra) : null);
}

/** Whether any finding breaks the chain (clock skew alone does not). */
function broken(integrity) {
  return integrity.findings.some((f) => f.kind !== 'clock_skew');
}

function chainState(integrity) {
  const state = broken(integrity) ? 'broken' : integrity.complete ? 'whole' : 'partial';
  return integrity.settled ? state : `${state} (settling)`;
}

function fact(label, value, cls) {
  return h('div', { class: cls ?? null }, h('dt', null, label), h('dd', null, value));
}

function button(text, onclick) {
  return h('button', { type: 'button', onclick }, text);
}

function section(title, n, ...body) {
  if (!n) return h('details', { class: 'section empty' }, h('summary', null, `${title} (0)`));
  return h('details', { class: 'section', open: true }, h('summary', null, `${title} (${n})`), ...body);
}

function table(pairs) {
  return h('table', { class: 'attrs' }, h('tbody', null, pairs.map(([k, v]) => h('tr', null, h('th', null, k), h('td', null, v)))));
}
