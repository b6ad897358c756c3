//! Response compression for the query port.
//!
//! A 100,000-span trace is ~55 MB of OTLP/JSON: fine on localhost, slow over a real
//! network. Responses of a text-like type and at least [`MIN_SIZE`] bytes are compressed
//! with zstd (level 1: several hundred MB/s, smaller than gzip) when the client accepts it —
//! current browsers do — else gzip (Prometheus, curl, Grafana). Only whole bodies are
//! compressed; a streamed body passes through untouched. Compressing changes the bytes, so a
//! strong `ETag` becomes weak, as nginx does; the UI's handler compares weakly.

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Smaller bodies gain too little to pay for the header and the work.
pub const MIN_SIZE: usize = 1024;
/// Bodies above this are compressed on a blocking thread, not on the async worker.
const BLOCKING_SIZE: usize = 256 * 1024;

/// A content coding the layer answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `zstd` (RFC 8878), level 1.
    Zstd,
    /// `gzip`, level 1.
    Gzip,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }

    fn encode(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoding::Zstd => zstd::bulk::compress(data, 1),
            Encoding::Gzip => {
                use std::io::Write as _;
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::new(1),
                );
                enc.write_all(data)?;
                enc.finish()
            }
        }
    }
}

/// The encoding to answer a request with, from its `Accept-Encoding` (RFC 9110 §12.5.3):
/// the highest q-value wins, zstd before gzip on a tie; `q=0` refuses; `*` stands for every
/// coding not named.
pub fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    let (mut zstd, mut gzip, mut any) = (None::<f32>, None::<f32>, None::<f32>);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for param in parts {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    // An unreadable weight refuses the coding rather than guessing.
                    q = v.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0);
                }
            }
            match coding.as_str() {
                "zstd" => zstd = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
    }
    let zstd = zstd.or(any).unwrap_or(0.0);
    let gzip = gzip.or(any).unwrap_or(0.0);
    if zstd > 0.0 && zstd >= gzip {
        Some(Encoding::Zstd)
    } else if gzip > 0.0 {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Types worth compressing: text, JSON, JavaScript, SVG, protobuf (Tempo's trace by id).
fn compressible(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("json")
        || ct.ends_with("javascript")
        || ct.ends_with("+xml")
        || ct.ends_with("protobuf")
}

/// A strong validator of the uncompressed bytes no longer matches them byte for byte.
fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(tag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok())
        && tag.starts_with('"')
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{tag}"))
    {
        headers.insert(header::ETAG, weak);
    }
}

/// The middleware (`axum::middleware::from_fn`).
pub async fn compress(request: Request, next: Next) -> Response {
    let encoding = if request.method() == Method::HEAD { None } else { negotiate(request.headers()) };
    let mut response = next.run(request).await;
    let Some(encoding) = encoding else { return response };
    if response.status() == StatusCode::NOT_MODIFIED {
        // The 304 repeats the validator the compressed 200 carried.
        weaken_etag(response.headers_mut());
        return response;
    }
    append_vary(response.headers_mut());
    let headers = response.headers();
    let size = response.body().size_hint().exact();
    let eligible = response.status() != StatusCode::NO_CONTENT
        && !headers.contains_key(header::CONTENT_ENCODING)
        && compressible(headers)
        && size.is_some_and(|n| n >= MIN_SIZE as u64);
    if !eligible {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The body is whole (its exact size is known), so collecting it only moves bytes.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "reading a response body to compress");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let encoded = if bytes.len() >= BLOCKING_SIZE {
        let data = bytes.clone();
        tokio::task::spawn_blocking(move || encoding.encode(&data))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        encoding.encode(&bytes)
    };
    match encoded {
        Ok(encoded) if encoded.len() < bytes.len() => {
            parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding.name()));
            parts.headers.remove(header::CONTENT_LENGTH);
            weaken_etag(&mut parts.headers);
            Response::from_parts(parts, Body::from(encoded))
        }
        Ok(_) => Response::from_parts(parts, Body::from(bytes)),
        Err(e) => {
            tracing::warn!(error = %e, encoding = encoding.name(), "compressing a response; sent as is");
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// Caches must key the response by `Accept-Encoding`.
fn append_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn negotiation_follows_q_values() {
        use Encoding::*;
        let cases = [
            ("gzip, deflate, br, zstd", Some(Zstd)),
            ("gzip", Some(Gzip)),
            ("x-gzip", Some(Gzip)),
            ("GZIP;Q=0.5", Some(Gzip)),
            ("zstd;q=0.5, gzip", Some(Gzip)),
            ("zstd;q=0, gzip;q=0.1", Some(Gzip)),
            ("zstd;q=0, gzip;q=0", None),
            ("*", Some(Zstd)),
            ("*;q=0", None),
            ("gzip, *;q=0", Some(Gzip)),
            ("zstd;q=nonsense", None),
            ("zstd;q=2", None),
            ("identity", None),
            ("br, deflate", None),
            ("", None),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate(&accept(header)), want, "Accept-Encoding: {header}");
        }
        assert_eq!(negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn both_encodings_round_trip() {
        let data = br#"{"resourceSpans":[{"scopeSpans":[]}]}"#.repeat(200);
        let z = Encoding::Zstd.encode(&data).expect("zstd");
        assert_eq!(zstd::bulk::decompress(&z, data.len()).expect("unzstd"), data);
        let g = Encoding::Gzip.encode(&data).expect("gzip");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&g[..]), &mut out).expect("gunzip");
        assert_eq!(out, data);
        assert!(z.len() < data.len() / 10 && g.len() < data.len() / 10);
    }

    #[test]
    fn only_text_like_types_are_compressed() {
        let ct = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).expect("header"));
            compressible(&h)
        };
        for yes in [
            "application/json",
            "text/html; charset=utf-8",
            "text/plain; version=0.0.4",
            "text/javascript",
            "image/svg+xml",
            "application/protobuf",
        ] {
            assert!(ct(yes), "{yes}");
        }
        for no in ["image/png", "application/octet-stream", "application/zstd"] {
            assert!(!ct(no), "{no}");
        }
        assert!(!compressible(&HeaderMap::new()));
    }
}
