//! Strand's sampling stage: what happens to spans between the receivers and the store.
//!
//! - [`config`]: the `sampling:` section, in the OpenTelemetry Collector's `tail_sampling`
//!   policy syntax, and the `--sampling errors-plus=5%` shorthand.
//! - [`policy`]: compiled policies and the collector's final decision rule.
//! - [`ottl`]: the OTTL subset of the collector's `ottl_condition` policy.
//! - [`buffer`]: the trace buffer, bounded in bytes, with its decision cache.
//! - [`red`]: request/error/duration metrics and service-graph edges, computed from every
//!   span *before* sampling so they stay exact when most traces are dropped.
//! - [`remote`]: Jaeger remote-sampling strategies, from a file or adaptive.
//! - [`runtime`]: [`runtime::Pipeline`], the sink the receivers write to: RED metrics, the
//!   buffer and its deciding task, and the durable pending log; and
//!   [`runtime::remote::RemoteSampling`], the strategies served to SDKs with the task that
//!   keeps them current (adaptive calculation, saved state, file reloads).
//!
//! Apart from [`runtime`], nothing here reads a clock or does I/O: time comes in as Unix
//! nanoseconds, so every behaviour is testable step by step. The server owns the HTTP
//! endpoints.

pub mod buffer;
pub mod codec;
pub mod config;
pub mod ottl;
pub mod policy;
pub mod red;
pub mod remote;
pub mod runtime;

pub use buffer::{
    Admitted, DecidedTrace, DecisionReason, LogRecord, Prepared, Preparer, TraceBuffer, Undecided,
};
pub use config::{PolicyConfig, PolicyType, SamplingConfig};
pub use policy::{PolicySet, TraceFacts, Verdict};
