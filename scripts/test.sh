#!/usr/bin/env bash
# Installs what the tests need (idempotently) and runs the whole test suite.
# Used by developers and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Debian packages, installed when missing (`apt-get update` at most once per run).
# Servers the tests start themselves (nats-server, rabbitmq-server) must not become boot
# services of the machine: a policy-rc.d forbids starting services while apt installs.
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update
    apt_updated=1
  fi
  local policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    # Removed however the install ends (set -e would skip a plain rm after a failure).
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# Python: a venv under the repository with the OpenTelemetry SDK and DuckDB.
venv=.venv
stamp="$venv/.installed-$(sha256sum tests/interop/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing Python test dependencies into $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --disable-pip-version-check -q -r tests/interop/requirements.txt
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
# The last OpenTelemetry Python exporters for Jaeger thrift and Zipkin need an older SDK and
# protobuf 3, so they get their own venv.
legacy=.venv-legacy
stamp="$legacy/.installed-$(sha256sum tests/interop/requirements-legacy.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing the legacy (Jaeger, Zipkin) exporters into $legacy"
  python3 -m venv "$legacy"
  "$legacy/bin/pip" install --disable-pip-version-check -q -r tests/interop/requirements-legacy.txt
  rm -f "$legacy"/.installed-*
  touch "$stamp"
fi
# jemalloc (the server's allocator on x86-64 Linux) is built from its C sources with make.
if ! command -v make >/dev/null 2>&1; then
  log "installing make"
  apt_install make
fi
# The README's examples use curl; tests run them as printed.
if ! command -v curl >/dev/null 2>&1; then
  log "installing curl"
  apt_install curl
fi
# Browser tests: Debian's Chromium driven by playwright-core from npm (never a downloaded
# browser), pinned by tests/browser/package-lock.json.
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium"
  apt_install chromium
fi
# The demo's message queue (NATS JetStream) for strand-instrument's and the demo's tests.
if [ ! -x /usr/sbin/nats-server ] && ! command -v nats-server >/dev/null 2>&1; then
  log "installing nats-server"
  apt_install nats-server
fi
# The cluster test keeps blocks in a real S3-compatible server: s3s-fs from crates.io
# (0.14.1, the newest that builds with Rust 1.95; about 80 s to build once), under .tools/.
s3s=.tools/s3s/bin/s3s-fs
if [ ! -x "$s3s" ]; then
  log "building s3s-fs (the cluster test's S3 server) into .tools/s3s"
  cargo install --locked --quiet --root .tools/s3s s3s-fs --version =0.14.1 --features binary
fi
export S3S_FS_BIN="$PWD/$s3s"
# strand-instrument's AMQP adapter is tested against a real RabbitMQ broker (the test starts
# its own on free ports; the package's service is never used).
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  log "installing rabbitmq-server"
  apt_install rabbitmq-server
fi
# promtool (from Debian's prometheus package) checks the /metrics exposition.
if [ ! -x /usr/bin/promtool ]; then
  log "installing prometheus (for promtool)"
  apt_install prometheus
fi
# Node and npm run the browser tests (the machine's own when present, else Debian's).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing nodejs and npm"
  apt_install nodejs npm
fi
browser=tests/browser
stamp="$browser/node_modules/.installed-$(sha256sum "$browser/package-lock.json" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing the browser test dependencies into $browser/node_modules"
  (cd "$browser" && npm ci --no-audit --no-fund)
  touch "$stamp"
fi
export INTEROP_TESTS_REQUIRED=1

# CI builds once from a clean clone: incremental caches would only cost disk and time.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=0
fi

# cargo-nextest runs each test in its own process with a timeout (.config/nextest.toml);
# the suite passes under plain `cargo test` too, which is what is used if the install fails.
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest || log "cargo-nextest could not be installed; using cargo test"
fi

log "checking formatting"
cargo fmt --all --check

log "building"
cargo build --workspace --all-targets --locked
# strand-instrument with no optional feature must build too (users pick integrations).
cargo build -p strand-instrument --lib --no-default-features --locked

log "linting"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "running tests"
if cargo nextest --version >/dev/null 2>&1; then
  # Doc examples first, so the run closes with nextest's summary line.
  cargo test --workspace --doc --locked
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
