// The query API, with errors turned into messages a person can act on.

/** A request that failed: `status` 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
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
  let response;
  try {
    response = await fetch(url, { signal, headers: { accept: 'application/json' } });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `The Strand server cannot be reached (${e.message}). Is it running?`);
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
