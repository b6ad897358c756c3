//! The benchmarks behind `strand bench`. They report numbers (JSON on stdout); they are not
//! pass/fail tests, and CI does not run them.
//!
//! - [`ingest`]: `bench ingest` and `bench query`: the standard traffic profile over
//!   OTLP/gRPC into a `strand serve` child process (or a running server), server CPU and
//!   memory from `/proc`, bytes on disk, lookup and search latencies.
//! - [`logs`]: `bench logs`: the standard log profile over OTLP/gRPC into a `strand serve`
//!   child process: server CPU and bytes on disk per record, logs-of-a-trace and search
//!   latencies.
//! - [`sampling`]: `bench sampling`: the tail sampler's memory and CPU per span, in-process.
//! - [`integrity`]: `bench integrity`: the chain-integrity analyser's recall per kind of
//!   break, false alarms and CPU per span, in-process, on labelled traffic.
//! - [`ui`]: `bench ui`: one huge trace opened in headless Chromium.
//!
//! `examples/index_cost.rs` and `examples/legacy_decode_cost.rs` time the search index
//! build and each receiver format's decoding per span on the same profile.

pub mod ingest;
pub mod integrity;
pub mod logs;
pub mod sampling;
pub mod ui;
