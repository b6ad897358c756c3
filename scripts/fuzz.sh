#!/usr/bin/env bash
# Runs every decoder fuzz target (fuzz/fuzz_targets) for a bounded time each, seeded from
# testdata. A benchmark-style check, not part of CI: it needs the nightly toolchain and
# cargo-fuzz (installed here if missing) and takes SECONDS × 6 plus a build.
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(jaeger_thrift_binary jaeger_agent_compact zipkin_json zipkin_proto otlp_protobuf otlp_json)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

seed() {
  case "$1" in
    jaeger_thrift_binary) echo testdata/jaeger/python-otel-1.21-collector.thrift ;;
    jaeger_agent_compact) echo testdata/jaeger/python-otel-1.21-agent.thrift ;;
    zipkin_json) echo testdata/zipkin/*.json ;;
    zipkin_proto) echo testdata/zipkin/python-otel-1.21.pb ;;
    otlp_protobuf) echo testdata/otlp/trace.protobuf-bin ;;
    otlp_json) echo testdata/otlp/trace.json ;;
  esac
}

for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  # shellcheck disable=SC2046
  cp -n $(seed "$t") "$corpus"/ 2>/dev/null || true
  echo "==> fuzzing $t for ${secs}s"
  (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 -print_final_stats=1 2>&1) \
    | grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|thread .* panicked|Done)' || true
  if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then
    echo "crash found for $t: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "no crashes"
