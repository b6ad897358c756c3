//! The web UI: plain JavaScript modules and CSS from `ui/` in the repository, compiled into
//! the binary (no front-end build step; see `docs/adr/004-web-ui-without-a-build-step.md`).
//!
//! Page paths are the Jaeger UI's (`/search`, `/trace/{id}`, `/trace/{a}...{b}`,
//! `/dependencies`), so links people already have keep working (plus `/logs`, Strand's log
//! search); each answers `index.html`,
//! and the modules route on the client. Assets live under `/static/`.

use std::path::PathBuf;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One file of the UI: its name under `ui/`, media type and bytes.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $media:literal),* $(,)?) => {
        &[$(Asset { name: $name, media_type: $media, bytes: include_bytes!(concat!("../../../ui/", $name)) }),*]
    };
}

/// Every file the UI consists of. A test checks that this list and `ui/` agree.
static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.css" => "text/css; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "api.js" => "text/javascript; charset=utf-8",
    "dom.js" => "text/javascript; charset=utf-8",
    "format.js" => "text/javascript; charset=utf-8",
    "model.js" => "text/javascript; charset=utf-8",
    "search.js" => "text/javascript; charset=utf-8",
    "trace.js" => "text/javascript; charset=utf-8",
    "map.js" => "text/javascript; charset=utf-8",
    "compare.js" => "text/javascript; charset=utf-8",
    "autocomplete.js" => "text/javascript; charset=utf-8",
    "logs.js" => "text/javascript; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
};

/// Names of the embedded files, for the test that compares them with `ui/`.
pub fn embedded_names() -> Vec<&'static str> {
    ASSETS.iter().map(|a| a.name).collect()
}

/// Scripts, styles and connections only from the server itself: a string that slipped into
/// the page as markup still could not run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct UiState {
    /// Serve files from this directory instead of the embedded ones (UI development).
    dir: Option<PathBuf>,
}

/// The UI's routes. `dir` replaces the embedded files with a directory read on every
/// request, so UI work needs no rebuild.
pub fn router(dir: Option<PathBuf>) -> Router {
    let page = || get(index);
    Router::new()
        .route("/", page())
        .route("/search", page())
        .route("/trace/{id}", page())
        .route("/dependencies", page())
        .route("/compare", page())
        .route("/logs", page())
        .route("/static/{file}", get(asset))
        .route("/favicon.ico", get(|s, h| async move { serve(s, "favicon.svg", h).await }))
        .fallback(not_found)
        .with_state(UiState { dir })
}

async fn index(state: State<UiState>, headers: HeaderMap) -> Response {
    serve(state, "index.html", headers).await
}

/// Unknown paths: a page saying so for browsers, a plain 404 for API clients.
async fn not_found(
    state: State<UiState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let wants_page = method == axum::http::Method::GET
        && !uri.path().starts_with("/api/")
        && headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if !wants_page {
        return (StatusCode::NOT_FOUND, format!("no such path: {}", uri.path())).into_response();
    }
    let mut page = serve(state, "index.html", HeaderMap::new()).await;
    *page.status_mut() = StatusCode::NOT_FOUND;
    page
}

async fn asset(state: State<UiState>, Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(state, &file, headers).await
}

async fn serve(State(state): State<UiState>, name: &str, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let bytes: std::borrow::Cow<'static, [u8]> = match &state.dir {
        None => asset.bytes.into(),
        Some(dir) => match tokio::fs::read(dir.join(name)).await {
            Ok(b) => b.into(),
            Err(e) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("reading ui file {name}: {e}"))
                    .into_response();
            }
        },
    };
    let etag = format!("\"{:016x}\"", fnv1a(&bytes));
    let fresh =
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| matches(v, &etag));
    let mut response =
        if fresh { StatusCode::NOT_MODIFIED.into_response() } else { bytes.into_owned().into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
    // Revalidate every time: the ETag makes that a 304 without a body.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex etag is a valid header"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if name == "index.html" {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    response
}

/// `If-None-Match` against our strong tag with the weak comparison RFC 9110 §13.1.2
/// prescribes: the compression layer hands out `W/"…"` for the same bytes.
fn matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_ui_is_embedded_and_nothing_else() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("ui directory")
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = embedded_names().into_iter().map(String::from).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "ui/ and ASSETS in ui.rs must list the same files");
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let tag = "\"00ab\"";
        for yes in ["\"00ab\"", "W/\"00ab\"", "\"ff\", W/\"00ab\"", "*"] {
            assert!(matches(yes, tag), "{yes}");
        }
        for no in ["\"00ac\"", "W/\"00ab-x\"", "", "00ab"] {
            assert!(!matches(no, tag), "{no}");
        }
    }
}
