#!/usr/bin/env bash
# The cluster benchmark (issue 19; results in docs/cluster.md): on this machine, with a real
# nats-server and release builds,
#   - server CPU per span end to end across the roles (receiver + ingesters + NATS) against
#     the single binary's (`strand bench ingest`), all with `fsync: always`;
#   - ingest throughput with one ingester and with two (spans acknowledged to the client
#     per second, and spans written by the ingesters per second);
#   - trace by id through the querier, for data in the ingesters; then, with blocks in
#     object storage (s3s-fs, which scripts/test.sh builds into .tools/), for data read
#     from there: warm (block indexes cached) and cold (a querier just started with an
#     empty cache: its first read of each trace index, after the bucket's listing).
#
#   scripts/bench-cluster.sh [SPANS]       (default 300000; SPANS=... also works)
#
# Not run by CI: it needs a release build and minutes of machine time.
set -euo pipefail
cd "$(dirname "$0")/.."

SPANS="${1:-${SPANS:-300000}}"
NATS="$(command -v nats-server || echo /usr/sbin/nats-server)"
[ -x "$NATS" ] || { echo "nats-server is missing (scripts/test.sh installs it)" >&2; exit 1; }
S3S="${S3S_FS_BIN:-$PWD/.tools/s3s/bin/s3s-fs}"
[ -x "$S3S" ] || { echo "s3s-fs is missing at $S3S (scripts/test.sh builds it)" >&2; exit 1; }
cargo build --release -p strand-server >&2
BIN="$PWD/target/release/strand"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
TCK="$(getconf CLK_TCK)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v t="$TCK" '{ printf "%.3f\n", ($14 + $15) / t }' "/proc/$1/stat"; }
calc() { python3 -c "print($1)"; }
metric() { curl -sf "http://$1/metrics" | awk -v m="$2" '$1 == m { s += $2 } END { printf "%d\n", s }'; }
wait_http() { for _ in $(seq 1 200); do curl -sf "http://$1/healthz" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# Trace by id through the querier at $1 for the ids in $2: "p50 p99" in ms.
by_id() {
  while read -r id; do
    curl -sf -o /dev/null -w '%{time_total}\n' "http://$1/api/v1/traces/$id"
  done <"$2" | sort -n >"$2.lat"
  local n; n="$(wc -l <"$2.lat")"
  awk -v n="$n" 'NR == int(n * 0.5) + 1 { printf "%.2f ", $1 * 1000 } NR == int(n * 0.99) + 1 { printf "%.2f\n", $1 * 1000 }' "$2.lat"
}

# One cluster run with $1 ingesters; prints "throughput_acked throughput_written cpu_us_per_span by_id_p50_ms by_id_p99_ms
# objects_warm_p50 objects_warm_p99 objects_cold_p50 objects_cold_p99".
run_cluster() {
  local ingesters="$1" dir="$WORK/cluster-$1"
  mkdir -p "$dir"
  local nport; nport="$(free_port)"
  "$NATS" -js -a 127.0.0.1 -p "$nport" -sd "$dir/nats" >"$dir/nats.log" 2>&1 &
  local npid=$!; PIDS+=("$npid")
  sleep 0.5
  local sport; sport="$(free_port)"
  mkdir -p "$dir/s3/strand"
  "$S3S" --host 127.0.0.1 --port "$sport" --access-key bench --secret-key benchsecret "$dir/s3" >"$dir/s3.log" 2>&1 &
  PIDS+=($!)
  local common=(--set "cluster.nats_url=nats://127.0.0.1:$nport" --set cluster.partitions=${PARTS:-16} ${BENCH_SET:-}
    --set cluster.objects.url=s3://strand/bench --set "cluster.objects.endpoint=http://127.0.0.1:$sport"
    --set cluster.objects.access_key_id=bench --set cluster.objects.secret_access_key=benchsecret
    --set cluster.objects.handoff_delay=3s --set cluster.objects.keep_after_handoff=3s)
  local rgrpc rhttp; rgrpc="$(free_port)"; rhttp="$(free_port)"
  "$BIN" serve --role receiver --data-dir "$dir/r" --otlp-grpc-listen "127.0.0.1:$rgrpc" \
    --otlp-http-listen 127.0.0.1:0 --jaeger-thrift-listen 127.0.0.1:0 --jaeger-agent-listen 127.0.0.1:0 \
    --jaeger-agent-binary-listen 127.0.0.1:0 --zipkin-listen 127.0.0.1:0 --remote-sampling-listen 127.0.0.1:0 \
    --http-listen "127.0.0.1:$rhttp" "${common[@]}" >"$dir/r.log" 2>&1 &
  local rpid=$!; PIDS+=("$rpid")
  local ipids=() ihttps=()
  for i in $(seq 1 "$ingesters"); do
    local ih; ih="$(free_port)"
    "$BIN" serve --role ingester --data-dir "$dir/i$i" --http-listen "127.0.0.1:$ih" \
      --set "cluster.ingester_id=i$i" "${common[@]}" >"$dir/i$i.log" 2>&1 &
    ipids+=($!); PIDS+=($!); ihttps+=("127.0.0.1:$ih")
  done
  local qhttp; qhttp="$(free_port)"
  "$BIN" serve --role querier --data-dir "$dir/q" --http-listen "127.0.0.1:$qhttp" "${common[@]}" >"$dir/q.log" 2>&1 &
  local qpid=$!; PIDS+=("$qpid")
  wait_http "127.0.0.1:$rhttp"; wait_http "127.0.0.1:$qhttp"
  for h in "${ihttps[@]}"; do wait_http "$h"; done
  # Every partition owned before the load starts.
  for _ in $(seq 1 300); do
    local owned=0
    for h in "${ihttps[@]}"; do owned=$((owned + $(metric "$h" strand_cluster_partitions_owned))); done
    [ "$owned" -ge "${PARTS:-16}" ] && break
    sleep 0.2
  done
  local before=0 r0 i0=0 n0
  for p in "$rpid" "${ipids[@]}" "$npid"; do before="$(calc "$before + $(cpu "$p")")"; done
  r0="$(cpu "$rpid")"; n0="$(cpu "$npid")"
  for p in "${ipids[@]}"; do i0="$(calc "$i0 + $(cpu "$p")")"; done
  local t0; t0="$(date +%s.%N)"
  "$BIN" bench ingest --target "127.0.0.1:$rgrpc" --spans "$SPANS" --lookups 0 --json >"$dir/bench.json" 2>"$dir/bench.log"
  # Written: every message the receiver published has been consumed.
  local published; published="$(metric "127.0.0.1:$rhttp" strand_cluster_published_messages_total)"
  local consumed=0
  for _ in $(seq 1 3000); do
    consumed=0
    for h in "${ihttps[@]}"; do consumed=$((consumed + $(metric "$h" strand_cluster_consumed_messages_total))); done
    [ "$consumed" -ge "$published" ] && break
    sleep 0.1
  done
  # (A message written twice after a redelivery counts twice: the wait can end early then.)
  [ "$consumed" -ge "$published" ] || echo "  warning: $consumed of $published messages consumed after 300 s; the written rate is wrong" >&2
  local t1; t1="$(date +%s.%N)"
  # The heads cut into blocks, as the single binary's figure includes its final flush.
  for h in "${ihttps[@]}"; do
    curl -sf -X POST -H 'content-type: application/json' "http://$h/api/v1/admin/flush" >/dev/null
  done
  local after=0 i1=0
  for p in "$rpid" "${ipids[@]}" "$npid"; do after="$(calc "$after + $(cpu "$p")")"; done
  for p in "${ipids[@]}"; do i1="$(calc "$i1 + $(cpu "$p")")"; done
  per() { calc "round(($1) * 1000000 / $SPANS, 2)"; }
  echo "  $ingesters ingester(s), CPU µs per span: receiver $(per "$(cpu "$rpid") - $r0"), ingesters $(per "$i1 - $i0"), nats-server $(per "$(cpu "$npid") - $n0")" >&2
  local acked; acked="$(tail -1 "$dir/bench.json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["spans_per_second"]))')"
  local written; written="$(calc "round($SPANS / ($t1 - $t0))")"
  local cpu_us; cpu_us="$(calc "round(($after - $before) * 1000000 / $SPANS, 2)")"
  # Trace by id through the querier: 300 ids from a search, each read once, while the
  # blocks are still the ingesters' (the flush above cut them; the handoff is 3 s later).
  curl -sf "http://127.0.0.1:$qhttp/api/v1/search?limit=300&since=1h" \
    | python3 -c 'import json,sys; [print(t["traceId"]) for t in json.load(sys.stdin)["traces"]]' >"$dir/ids"
  local p50 p99
  read -r p50 p99 <<<"$(by_id "127.0.0.1:$qhttp" "$dir/ids")"
  # Every block handed over and deleted from the ingesters: reads come from the bucket.
  for _ in $(seq 1 600); do
    local up=0 gone=0
    for h in "${ihttps[@]}"; do
      up=$((up + $(metric "$h" strand_cluster_blocks_uploaded_total)))
      gone=$((gone + $(metric "$h" strand_cluster_blocks_handed_over_total)))
    done
    [ "$up" -gt 0 ] && [ "$gone" -ge "$up" ] && break
    sleep 0.1
  done
  echo "  blocks uploaded $up, handed over $gone" >&2
  by_id "127.0.0.1:$qhttp" "$dir/ids" >/dev/null
  local wp50 wp99
  read -r wp50 wp99 <<<"$(by_id "127.0.0.1:$qhttp" "$dir/ids")"
  # Cold: a fresh querier (empty cache) lists the bucket and opens the blocks (one
  # /api/v1/services), then reads one trace: the first lookup of each trace index.
  kill "$qpid"; wait "$qpid" 2>/dev/null || true
  head -20 "$dir/ids" >"$dir/cold-ids"
  : >"$dir/cold.lat"
  while read -r id; do
    rm -rf "$dir/qc"
    "$BIN" serve --role querier --data-dir "$dir/qc" --http-listen "127.0.0.1:$qhttp" "${common[@]}" >>"$dir/qc.log" 2>&1 &
    local cpid=$!
    wait_http "127.0.0.1:$qhttp"
    curl -sf -o /dev/null "http://127.0.0.1:$qhttp/api/v1/services"
    curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$qhttp/api/v1/traces/$id" >>"$dir/cold.lat"
    kill "$cpid"; wait "$cpid" 2>/dev/null || true
  done <"$dir/cold-ids"
  sort -n -o "$dir/cold.lat" "$dir/cold.lat"
  local cn cp50 cp99; cn="$(wc -l <"$dir/cold.lat")"
  cp50="$(awk -v n="$cn" 'NR == int(n * 0.5) + 1 { printf "%.2f", $1 * 1000 }' "$dir/cold.lat")"
  cp99="$(awk -v n="$cn" 'NR == n { printf "%.2f", $1 * 1000 }' "$dir/cold.lat")"
  for h in "${ihttps[@]}"; do
    echo "  ingester $h: consumed $(metric "$h" strand_cluster_consumed_messages_total), handed back $(metric "$h" strand_cluster_redelivery_requests_total), leases lost $(metric "$h" strand_cluster_leases_lost_total)" >&2
  done
  echo "$acked $written $cpu_us $p50 $p99 $wp50 $wp99 $cp50 $cp99"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

echo "single binary, $SPANS spans..." >&2
single="$("$BIN" bench ingest --spans "$SPANS" --lookups 300 --json 2>/dev/null | tail -1)"
s_cpu="$(echo "$single" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu_us_per_span"])')"
s_rate="$(echo "$single" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["spans_per_second"]))')"
s_p50="$(echo "$single" | python3 -c 'import json,sys; print(json.load(sys.stdin)["by_id_p50_ms"])')"
echo "cluster with 1 ingester..." >&2
read -r a1 w1 c1 p1 q1 ow1 oq1 oc1 ocq1 <<<"$(run_cluster 1)"
echo "cluster with 2 ingesters..." >&2
read -r a2 w2 c2 p2 q2 ow2 oq2 oc2 ocq2 <<<"$(run_cluster 2)"

cat <<EOF
| $SPANS spans, standard profile | single binary | cluster, 1 ingester | cluster, 2 ingesters |
|---|---|---|---|
| server CPU per span (all processes, NATS included) | $s_cpu µs | $c1 µs | $c2 µs |
| spans/s acknowledged to the client | $s_rate | $a1 | $a2 |
| spans/s written by the ingesters (until all consumed) | — | $w1 | $w2 |
| trace by id p50 / p99 (querier; single binary: its own API) | $s_p50 ms | $p1 / $q1 ms | $p2 / $q2 ms |
| … data in object storage, warm: p50 / p99 | — | $ow1 / $oq1 ms | $ow2 / $oq2 ms |
| … data in object storage, cold index (fresh querier), 20 runs: p50 / max | — | $oc1 / $ocq1 ms | $oc2 / $ocq2 ms |
EOF
