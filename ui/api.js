// The query API, with errors turned into messages a person can act on.

import { h } from './dom.js';

/** A request that failed: `status` 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The bearer token, when the server requires one: asked for on the first 401 and kept
// for this browser tab only (sessionStorage), never in a cookie or in local storage.
const TOKEN_KEY = 'strand.token';
let asking = null;

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** Asks for a token in a modal dialog; resolves to it, or to null when cancelled. One
 * dialog at a time: requests refused together wait for the same answer. */
function askForToken(message) {
  asking ??= new Promise((resolve) => {
    const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true,
      placeholder: 'strand_…', 'aria-label': 'Token' });
    const dialog = h('dialog', { class: 'token-dialog' },
      h('form', { method: 'dialog' },
        h('h2', null, 'This Strand server needs a token'),
        h('p', { class: 'token-reason' }, message),
        h('p', null, 'A token with the read scope (strand token new). It is kept for this tab only.'),
        input,
        h('div', { class: 'token-actions' },
          h('button', { type: 'submit', value: 'ok' }, 'Use token'),
          h('button', { type: 'submit', value: 'cancel', formnovalidate: true }, 'Cancel'))));
    dialog.addEventListener('close', () => {
      const token = dialog.returnValue === 'ok' ? input.value.trim() : '';
      dialog.remove();
      asking = null;
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      resolve(token || null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** GET a JSON API path; `params` values may be arrays (repeated parameters). */
export async function getJSON(path, params = {}, { signal } = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item != null && item !== '') qs.append(k, String(item));
    }
  }
  const url = qs.toString() ? `${path}?${qs}` : path;
  const send = async () => {
    try {
      return await fetch(url, { signal, headers: { accept: 'application/json', ...authHeaders() } });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, `The Strand server cannot be reached (${e.message}). Is it running?`);
    }
  };
  let response = await send();
  // A token is needed (or the one kept was refused): ask, then try once more.
  for (let tries = 0; response.status === 401 && tries < 3; tries++) {
    sessionStorage.removeItem(TOKEN_KEY);
    const body = await response.clone().json().catch(() => null);
    if (!(await askForToken(body?.error ?? 'The server asks for a token.'))) break;
    response = await send();
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === 'string') message = body.error;
    } catch { /* not JSON: keep the status line */ }
    throw new ApiError(response.status, message);
  }
  return response.json();
}
