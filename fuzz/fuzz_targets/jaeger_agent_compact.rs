//! Any input gives a batch or a precise error, never a panic, hang or unbounded allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = strand_ingest::jaeger::decode_agent(data) {
        assert!(!e.to_string().is_empty());
    }
});
