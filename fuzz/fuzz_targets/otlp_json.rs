//! Any input gives a batch or a precise error, never a panic, hang or unbounded allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = strand_ingest::otlp::decode(strand_ingest::otlp::Format::Json, data) {
        assert!(!e.to_string().is_empty());
    }
});
