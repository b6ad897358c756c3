//! A storage error's kind decides the answer, the same way in every API family: a
//! capability the backend lacks is 501, an overloaded backend 429 and an unavailable one
//! 503 (both with `Retry-After`), a query it rejects 400, a fault 500.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use strand_core::{BoxFuture, StoreError, Trace, TraceId, TraceReader};
use strand_query::QueryLimits;
use tower::ServiceExt as _;

/// A backend that can only look traces up by id, and fails those with `fail`.
struct Limited(fn() -> StoreError);

impl TraceReader for Limited {
    fn get_trace(&self, _: TraceId) -> BoxFuture<'_, Result<Option<Trace>, StoreError>> {
        let e = (self.0)();
        Box::pin(async move { Err(e) })
    }
}

async fn status(reader: Limited, path: &str) -> (StatusCode, Option<String>, String) {
    let app = strand_query::router(Arc::new(reader), QueryLimits::default(), None, None);
    let resp = app.oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("answer");
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().expect("ascii").to_owned());
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

const ID: &str = "5b8efff798038103d269b633813fc60c";

#[tokio::test]
async fn missing_capabilities_are_501_in_every_api() {
    for path in [
        "/api/v1/search?service=a",
        "/api/v1/services",
        "/api/v1/dependencies",
        "/api/services",
        "/api/traces?service=a",
        "/api/v3/services",
        "/api/search?tags=a%3Db",
        "/api/v1/logs?q=timeout",
    ] {
        let (status, retry, body) = status(Limited(|| StoreError::Closed), path).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{path}: {body}");
        assert_eq!(retry, None, "{path}");
        assert!(body.contains("does not support"), "{path}: {body}");
    }
}

#[tokio::test]
async fn overloaded_and_unavailable_backends_ask_for_a_retry() {
    type Case = (fn() -> StoreError, StatusCode, Option<&'static str>);
    let cases: [Case; 5] = [
        (|| StoreError::Overloaded("512 reads in flight".into()), StatusCode::TOO_MANY_REQUESTS, Some("1")),
        (|| StoreError::Unavailable("object store down".into()), StatusCode::SERVICE_UNAVAILABLE, Some("1")),
        (|| StoreError::Closed, StatusCode::SERVICE_UNAVAILABLE, Some("1")),
        (|| StoreError::InvalidQuery("regex too large".into()), StatusCode::BAD_REQUEST, None),
        (
            || StoreError::Corrupt { path: "blocks/x".into(), reason: "bad checksum".into() },
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
        ),
    ];
    for (error, want, want_retry) in cases {
        for path in [
            format!("/api/v1/traces/{ID}"),
            format!("/api/traces/{ID}"),
            format!("/api/v3/traces/{ID}"),
            format!("/api/v2/traces/{ID}"),
        ] {
            let (got, retry, body) = status(Limited(error), &path).await;
            assert_eq!(got, want, "{path}: {body}");
            assert_eq!(retry.as_deref(), want_retry, "{path}");
            assert!(body.contains(&error().to_string()), "{path}: the message names the cause: {body}");
        }
    }
}
