// A suggestion list under a text input. With `tokens`, the input holds space-separated
// `key=value` filters and suggestions complete the filter under the caret.

import { h } from './dom.js';

/**
 * Wraps `input` (already in the page) and returns the wrapper. `source(text)` gives the
 * suggestions (strings, or a promise of them) for `text`, the whole value or the current
 * token. Picking one fills it in and calls `onPick(value)`.
 */
export function autocomplete(input, source, { tokens = false, onPick } = {}) {
  const list = h('ul', { class: 'ac-list', role: 'listbox', hidden: true });
  const wrap = h('div', { class: 'ac' });
  input.replaceWith(wrap);
  wrap.append(input, list);
  input.setAttribute('autocomplete', 'off');
  input.setAttribute('role', 'combobox');
  input.setAttribute('aria-expanded', 'false');
  let items = [];
  let active = -1;
  let seq = 0;
  let timer = 0;

  const span = () => {
    if (!tokens) return [0, input.value.length];
    const caret = input.selectionStart ?? input.value.length;
    const start = input.value.lastIndexOf(' ', caret - 1) + 1;
    let end = input.value.indexOf(' ', caret);
    if (end < 0) end = input.value.length;
    return [start, end];
  };
  const hide = () => {
    list.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    active = -1;
  };
  const show = () => {
    list.replaceChildren(...items.map((text, i) => h('li', {
      role: 'option', 'aria-selected': String(i === active), class: i === active ? 'active' : null,
      onmousedown: (e) => { e.preventDefault(); pick(i); },
    }, text)));
    list.hidden = items.length === 0;
    input.setAttribute('aria-expanded', String(!list.hidden));
  };
  const pick = (i) => {
    const [start, end] = span();
    const value = items[i];
    if (tokens) {
      const before = input.value.slice(0, start);
      const after = input.value.slice(end);
      const done = value.includes('=') && !value.endsWith('=');
      input.value = `${before}${value}${done && !after.startsWith(' ') ? ' ' : ''}${after}`;
      const caret = before.length + value.length + (done ? 1 : 0);
      input.setSelectionRange(caret, caret);
      hide();
      if (!done) refresh(); // a key was picked: suggest its values next
    } else {
      input.value = value;
      hide();
    }
    onPick?.(input.value);
  };
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++seq;
      const [start, end] = span();
      const text = input.value.slice(start, end);
      let found = [];
      try {
        found = await source(text);
      } catch {
        found = []; // suggestions are a help; a failed lookup just offers none
      }
      if (mine !== seq || document.activeElement !== input) return;
      const needle = text.toLowerCase();
      items = found.filter((s) => s.toLowerCase().includes(needle) && s !== text).slice(0, 50);
      active = -1;
      show();
    }, 80);
  };
  input.addEventListener('input', refresh);
  input.addEventListener('focus', refresh);
  input.addEventListener('blur', () => setTimeout(hide, 100));
  input.addEventListener('keydown', (e) => {
    if (list.hidden) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const n = items.length;
      active = (active + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
      show();
    } else if (e.key === 'Enter' && active >= 0) {
      e.preventDefault();
      pick(active);
    } else if (e.key === 'Escape') {
      hide();
    }
  });
  return wrap;
}
