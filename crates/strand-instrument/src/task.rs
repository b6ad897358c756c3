//! Work that leaves the request: spawned tasks and blocking jobs that keep the trace.
//!
//! A task spawned with plain `tokio::spawn` starts with an empty context, so its spans
//! begin new traces — the broken chain this crate exists to prevent. [`spawn_in_trace`]
//! carries the current trace into the task; [`spawn_detached`] also gives the task its own
//! span, a child of the current one that ends when the task ends, however long after the
//! request that started it (which may have answered or been cancelled meanwhile).

use std::borrow::Cow;
use std::future::Future;

use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use tokio::task::JoinHandle;

use crate::start_span;

/// Spawns `fut` on the Tokio runtime with the current trace context: spans it starts are
/// children of the current span. The task does not keep the current span open.
pub fn spawn_in_trace<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(fut.with_context(Context::current()))
}

/// Spawns `fut` as a background task with its own INTERNAL span `name`, a child of the
/// current span. The span ends when the task finishes; if the task is aborted or panics it
/// ends then with an error status.
pub fn spawn_detached<F>(name: impl Into<Cow<'static, str>>, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let cx = detached_context(name.into());
    let guard = EndGuard { cx: cx.clone(), done: false };
    tokio::spawn(async move {
        let mut guard = guard; // the whole guard moves into the task (not just `done`)
        let out = fut.with_context(cx).await;
        guard.done = true;
        out
    })
}

/// `spawn_blocking` with the current trace context attached while `f` runs.
pub fn spawn_blocking_in_trace<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let cx = Context::current();
    tokio::task::spawn_blocking(move || {
        let _attached = cx.attach();
        f()
    })
}

/// `spawn_blocking` with its own INTERNAL span `name` (child of the current span), ended
/// when `f` returns or unwinds.
pub fn spawn_blocking_detached<F, R>(name: impl Into<Cow<'static, str>>, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let cx = detached_context(name.into());
    tokio::task::spawn_blocking(move || {
        let mut guard = EndGuard { cx: cx.clone(), done: false };
        let _attached = cx.attach();
        let out = f();
        guard.done = true;
        out
    })
}

fn detached_context(name: Cow<'static, str>) -> Context {
    start_span(
        name,
        SpanKind::Internal,
        vec![KeyValue::new("strand.task.detached", true)],
        &Context::current(),
    )
}

/// Ends the task's span however the task ends.
struct EndGuard {
    cx: Context,
    done: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let span = self.cx.span();
        if std::thread::panicking() {
            span.set_status(Status::error("task panicked"));
        } else if !self.done {
            span.set_status(Status::error("task cancelled before it finished"));
        }
        span.end();
    }
}
