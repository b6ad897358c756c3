//! Mutated and random bodies never panic the OTLP decoders: each answer is a batch or a
//! precise error. (A bounded, seeded stand-in for fuzzing that runs in every test run.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strand_ingest::http_body::{Encoding, gunzip, inflate};
use strand_ingest::otlp::{Format, decode};

const PB: &[u8] = include_bytes!("../../../testdata/otlp/trace.protobuf-bin");
const JSON: &[u8] = include_bytes!("../../../testdata/otlp/trace.json");

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..8) {
        if out.is_empty() {
            out.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..out.len());
        match rng.random_range(0..5) {
            0 => out[i] ^= 1 << rng.random_range(0..8),
            1 => out[i] = rng.random(),
            2 => out.truncate(i),
            3 => out.insert(i, rng.random()),
            _ => {
                let end = rng.random_range(i..out.len());
                let chunk = out[i..end].to_vec();
                out.splice(i..i, chunk);
            }
        }
    }
    out
}

#[test]
fn mutated_protobuf_and_json_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        for (format, seed) in [(Format::Protobuf, PB), (Format::Json, JSON)] {
            match decode(format, &mutate(&mut rng, seed)) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    err += 1;
                }
            }
        }
    }
    assert!(ok > 0 && err > 0, "mutations exercise both outcomes: {ok} ok, {err} errors");
}

#[test]
fn random_bytes_never_panic_and_gzip_stays_bounded() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..5_000 {
        let len = rng.random_range(0..256);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = decode(Format::Protobuf, &bytes);
        let _ = decode(Format::Json, &bytes);
        let mut gz = vec![0x1f, 0x8b, 0x08, 0x00];
        gz.extend_from_slice(&bytes);
        let _ = gunzip(&gz, 1024);
        for (encoding, magic) in
            [(Encoding::Deflate, &[0x78, 0x9c][..]), (Encoding::Zstd, &[0x28, 0xb5, 0x2f, 0xfd])]
        {
            let mut body = magic.to_vec();
            body.extend_from_slice(&bytes);
            if let Ok(out) = inflate(encoding, &body, 1024) {
                assert!(out.len() <= 1024, "{encoding:?} output stays under the limit");
            }
        }
    }
    // A small body inflating past the limit is refused, whatever the encoding.
    let spaces = vec![b' '; 1 << 20];
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut zlib, &spaces).expect("deflate");
    for (encoding, body) in [
        (Encoding::Deflate, zlib.finish().expect("deflate")),
        (Encoding::Zstd, zstd::encode_all(&spaces[..], 1).expect("zstd")),
    ] {
        assert!(inflate(encoding, &body, 1024).is_err_and(|e| e.to_string().contains("exceeds the limit")));
        assert_eq!(inflate(encoding, &body, 1 << 20).map(|v| v.len()).ok(), Some(1 << 20), "{encoding:?}");
    }
}

#[test]
fn mutated_jaeger_and_zipkin_payloads_never_panic() {
    use strand_ingest::{jaeger, zipkin};
    const COLLECTOR: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-collector.thrift");
    const AGENT: &[u8] = include_bytes!("../../../testdata/jaeger/python-otel-1.21-agent.thrift");
    const ZIPKIN_JSON: &[u8] = include_bytes!("../../../testdata/zipkin/python-otel-1.21.json");
    const ZIPKIN_PROTO: &[u8] = include_bytes!("../../../testdata/zipkin/python-otel-1.21.pb");
    let agent_binary = jaeger::encode::binary_emit_batch(
        &jaeger::model::decode_compact_emit_batch(AGENT).expect("the captured datagram decodes"),
        1,
    );
    let mut rng = StdRng::seed_from_u64(13);
    let (mut ok, mut err) = (0, 0);
    let mut count =
        |r: Result<(strand_core::SpanBatch, strand_otlp::Rejections), strand_ingest::IngestError>| match r {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
        };
    for _ in 0..10_000 {
        count(jaeger::decode_http(&mutate(&mut rng, COLLECTOR)));
        count(jaeger::decode_agent(&mutate(&mut rng, AGENT)));
        count(jaeger::decode_agent_binary(&mutate(&mut rng, &agent_binary)));
        count(zipkin::decode(zipkin::Format::Json, &mutate(&mut rng, ZIPKIN_JSON)));
        count(zipkin::decode(zipkin::Format::Proto, &mutate(&mut rng, ZIPKIN_PROTO)));
    }
    assert!(ok > 0 && err > 0, "mutations exercise both outcomes: {ok} ok, {err} errors");
}
