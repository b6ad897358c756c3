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

/** Fetches `url` with the token (asking for one when the server wants it, at most three
 * times) and, when `withTenant`, the chosen tenant. */
async function fetchAuthorized(url, signal, withTenant) {
  const send = async () => {
    const tenant = withTenant ? sessionStorage.getItem(TENANT_KEY) : null;
    const headers = { accept: 'application/json', ...authHeaders(), ...(tenant ? { 'x-scope-orgid': tenant } : {}) };
    try {
      return await fetch(url, { signal, headers });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, `The Strand server cannot be reached (${e.message}). Is it running?`);
    }
  };
  let response = await send();
  // A token is needed (or the one kept was refused: the answer challenges for a bearer
  // token), so ask, then try again. A 401 for a missing tenant challenges for nothing.
  for (let tries = 0; response.status === 401 && response.headers.has('www-authenticate') && tries < 3; tries++) {
    sessionStorage.removeItem(TOKEN_KEY);
    const body = await response.clone().json().catch(() => null);
    if (!(await askForToken(body?.error ?? 'The server asks for a token.'))) break;
    response = await send();
  }
  return response;
}

// With tenants on, the tenant whose data the UI shows: the one picked in this tab, else
// the first the server lists for this token. Chosen once per page load, before any read.
const TENANT_KEY = 'strand.tenant';
let tenantChoice = null;

function chooseTenant() {
  tenantChoice ??= (async () => {
    const response = await fetchAuthorized('/api/v1/tenants', undefined, false);
    if (!response.ok) return;
    const { multitenancy, tenants } = await response.json();
    if (!multitenancy) {
      sessionStorage.removeItem(TENANT_KEY);
      return;
    }
    let current = sessionStorage.getItem(TENANT_KEY);
    if (!tenants.includes(current)) current = tenants[0] ?? null;
    if (current) sessionStorage.setItem(TENANT_KEY, current);
    window.dispatchEvent(new CustomEvent('strand:tenants', { detail: { tenants, current } }));
  })().catch(() => {});
  return tenantChoice;
}

/** A link's click handler for an API path: with a token or a tenant, which a plain link
 * cannot send, it fetches the JSON itself and shows it in a new tab. */
export function openJSON(path) {
  return (event) => {
    const plain = !sessionStorage.getItem(TOKEN_KEY) && !sessionStorage.getItem(TENANT_KEY);
    if (plain || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    const tab = window.open('', '_blank');
    getJSON(path).then((data) => {
      const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' }));
      if (tab) tab.location.href = url;
      else window.location.href = url;
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    }).catch((e) => {
      if (tab) tab.document.body.textContent = `Could not load ${path}: ${e.message}`;
    });
  };
}

/** Switches the UI to another tenant (the page reloads). */
export function pickTenant(tenant) {
  sessionStorage.setItem(TENANT_KEY, tenant);
  window.location.reload();
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
  await chooseTenant();
  const response = await fetchAuthorized(url, signal, true);
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
