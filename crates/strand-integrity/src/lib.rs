//! Chain integrity: where a trace's context was lost, per trace and per service edge.
//!
//! Every span is looked at before sampling ([`runtime::ChainAnalyser`] is a
//! [`strand_core::SpanObserver`]). A trace that went quiet for the settle time is analysed
//! ([`analysis::analyse`]: missing parents and roots, calls and queue hops whose callee did
//! not continue the trace, work started without a request's context, clock skew), the
//! halves of a break are matched across traces ([`observer::Observer`]), each call's outcome
//! is counted once on its caller → callee edge, and the findings of settled traces are kept
//! for the query APIs ([`strand_core::ChainIntegrity`]).
//!
//! - [`span`]: the part of a span the analyser keeps.
//! - [`analysis`]: the rules, as a pure function.
//! - [`observer`]: the stream state (settling, matching, edge counts); time passed in.
//! - [`runtime`]: the analyser at run time: ticks, the findings index and log, metrics.
//! - [`config`]: the `integrity:` configuration section.
//! - [`scenario`]: a labelled generator of traces with known breaks (tests, `strand bench
//!   integrity`).

pub mod analysis;
pub mod config;
pub mod observer;
pub mod runtime;
pub mod scenario;
pub mod span;

pub use config::IntegrityConfig;
pub use runtime::ChainAnalyser;
