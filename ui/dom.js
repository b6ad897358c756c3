// Building the page from data without ever parsing a string as HTML: every text is a text
// node or an attribute value, so a span named `<script>` shows as those characters.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An HTML element with properties and children (strings become text nodes). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, likewise. */
export function svg(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

function build(el, props, children) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'style') Object.assign(el.style, value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'href') el.setAttribute('href', safeHref(value));
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Appends children: nodes as they are, anything else as text. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Links stay on this server: a path (`/x`, not `//host`), a query or a fragment. */
export function safeHref(href) {
  const s = String(href);
  if ((s.startsWith('/') && !s.startsWith('//')) || s.startsWith('?') || s.startsWith('#')) return s;
  return '#';
}

/** A button that copies `text` and says so for a moment. */
export function copyButton(text, label = 'Copy') {
  const btn = h('button', { class: 'copy', type: 'button', title: `Copy ${text}` }, label);
  btn.addEventListener('click', async (e) => {
    e.stopPropagation();
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = 'Copied';
    } catch {
      // Clipboard refused (no secure context): select the text for a manual copy instead.
      window.prompt('Copy:', text);
    }
    setTimeout(() => { btn.textContent = label; }, 1200);
  });
  return btn;
}

/** The explanation shown when there is nothing to show or something failed. */
export function notice(kind, title, ...body) {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('h2', null, title), ...body.map((b) => (typeof b === 'string' ? h('p', null, b) : b)));
}
