// Durations, times and service colours. Times inside a trace are microseconds (floats)
// relative to the trace start; absolute times are milliseconds since the epoch.

/** `1.5s`, `12.3ms`, `850µs`, `0.4µs`. */
export function duration(us) {
  if (!Number.isFinite(us)) return '–';
  const a = Math.abs(us);
  if (a >= 60e6) {
    const m = Math.floor(a / 60e6);
    return `${us < 0 ? '-' : ''}${m}m${((a - m * 60e6) / 1e6).toFixed(0)}s`;
  }
  if (a >= 1e6) return `${trim(us / 1e6)}s`;
  if (a >= 1e3) return `${trim(us / 1e3)}ms`;
  return `${trim(us)}µs`;
}

function trim(x) {
  const a = Math.abs(x);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return String(Number(x.toFixed(digits)));
}

/** `2026-11-22 10:04:05.123` in local time. */
export function dateTime(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return '–';
  const p = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

/** `3 minutes ago`, `in 2 hours`. */
export function ago(ms, now = Date.now()) {
  const s = Math.round((now - ms) / 1000);
  const units = [['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];
  for (const [name, size] of units) {
    const n = Math.floor(Math.abs(s) / size);
    if (n >= 1) return s >= 0 ? `${n} ${name}${n > 1 ? 's' : ''} ago` : `in ${n} ${name}${n > 1 ? 's' : ''}`;
  }
  return 'just now';
}

/** A nanosecond count as a decimal string (OTLP/JSON) → milliseconds since the epoch. */
export function nanosToMs(s) {
  const str = String(s ?? '0');
  return str.length > 6 ? Number(str.slice(0, -6)) + Number(str.slice(-6)) / 1e6 : Number(str) / 1e6;
}

// Twelve hues that stay apart in light and dark themes.
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948',
  '#9c755f', '#ff9da7', '#86bcb6', '#8cd17d', '#a0cbe8', '#d4a6c8'];

/** A stable colour per service name. */
export function serviceColor(name) {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return PALETTE[(h >>> 0) % PALETTE.length];
}

/** Number with thousands separators. */
export function count(n) {
  return Number(n).toLocaleString('en-US');
}

// Tick steps for a time axis, in milliseconds: 1-2-5 below a second, then clock-friendly.
const TICK_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3,
  600e3, 900e3, 1800e3, 3600e3, 7200e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3];

/**
 * Ticks for a time axis over `[x0, x1]` (milliseconds since the epoch): at most `max`, at
 * round multiples of one step, each labelled no finer than the step needs and never the
 * same text twice (`14:30`, `14:30:15`, `14:30:15.250`; the date where a tick starts a new
 * day, or alone for steps of a day and more). Times are local, as `dateTime` prints them.
 */
export function timeTicks(x0, x1, max = 5) {
  if (!Number.isFinite(x0) || !Number.isFinite(x1) || x1 < x0) return [];
  const span = Math.max(x1 - x0, 1);
  // Fewer than `max` steps in the range: at most `max` ticks even when both ends are ticks.
  const step = TICK_STEPS.find((s) => span / s < max) ?? Math.ceil(span / (max - 1) / 604800e3) * 604800e3;
  // Round in local time (what the labels show), not UTC: whole local hours and days.
  const offset = new Date(x0).getTimezoneOffset() * 60e3;
  const ticks = [];
  for (let t = Math.ceil((x0 + offset) / step) * step - offset; t <= x1; t += step) if (t >= x0) ticks.push(t);
  let lastDay = null;
  const out = ticks.map((at) => {
    const full = dateTime(at); // YYYY-MM-DD HH:MM:SS.mmm
    const day = full.slice(0, 10);
    const clock = step < 1e3 ? full.slice(11, 23) : step < 60e3 ? full.slice(11, 19) : full.slice(11, 16);
    const label = step >= 86400e3 ? day : day !== lastDay && lastDay !== null ? `${day.slice(5)} ${clock}` : clock;
    lastDay = day;
    return { at, label, full };
  });
  // A clock change (the hour repeated in autumn) can repeat a label: those get the full time.
  const seen = new Set();
  return out.map(({ at, label, full }) => {
    const text = seen.has(label) ? full : label;
    seen.add(label);
    return { at, label: text };
  });
}
