"""Exports a two-service trace with the OpenTelemetry Python SDK's Jaeger and Zipkin
exporters (the last releases that ship them) to a running strand, reads it back through
strand's native API and checks what each protocol can carry.

usage: legacy_export.py export (jaeger-http|jaeger-udp|zipkin-json|zipkin-proto) ENDPOINT QUERY_URL
       legacy_export.py capture OUT_DIR

`export`: ENDPOINT is the collector URL (`http://host:14268/api/traces`,
`http://host:9411/api/v2/spans`) or, for jaeger-udp, the agent's `host:port`. Exits 0 when
the trace came back as the protocol allows; prints the differences and exits 1 otherwise.

`capture`: sends the same trace (fixed ids and times) to local capture servers and writes
each exporter's raw payload to OUT_DIR, for the decoders' golden tests in testdata/.
"""

import http.server
import socket
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from strand_api import Problems, matched_spans, norm_value, otlp_value, spans_by_id, wait_for_trace

MS = 1_000_000


class FixedIds(IdGenerator):
    def __init__(self, trace_id, first_span_id):
        self.trace_id, self.next = trace_id, first_span_id

    def generate_trace_id(self):
        return self.trace_id

    def generate_span_id(self):
        self.next += 1
        return self.next


def exporter_for(protocol, endpoint):
    if protocol == "jaeger-http":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter
        return JaegerExporter(collector_endpoint=endpoint)
    if protocol == "jaeger-udp":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter
        host, port = endpoint.rsplit(":", 1)
        return JaegerExporter(agent_host_name=host, agent_port=int(port))
    if protocol == "zipkin-json":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter
        return ZipkinExporter(endpoint=endpoint)
    if protocol == "zipkin-proto":
        from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter
        return ZipkinExporter(endpoint=endpoint)
    raise SystemExit(f"unknown protocol {protocol}")


def emit(protocol, endpoint, trace_id, base, batch=False):
    """Sends the trace (with `batch`, each service's spans in one request); returns the
    finished spans as the SDK saw them."""
    memory = InMemorySpanExporter()
    ids = FixedIds(trace_id, trace_id & 0xFFFF_FFFF_0000_0000)
    providers = {}

    def tracer(service):
        if service not in providers:
            p = TracerProvider(
                resource=Resource.create({"service.name": service, "deployment.environment": "interop"}),
                id_generator=ids,
            )
            processor = BatchSpanProcessor if batch else SimpleSpanProcessor
            p.add_span_processor(processor(exporter_for(protocol, endpoint)))
            p.add_span_processor(SimpleSpanProcessor(memory))
            providers[service] = p
        return providers[service].get_tracer("legacy." + service, "1.2.3")

    linked = SpanContext(trace_id=trace_id ^ 0xFF, span_id=0xABCDEF, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    gw, users = tracer("legacy-gateway"), tracer("legacy-users")
    root = gw.start_span("POST /reports", kind=SpanKind.SERVER, start_time=base, attributes={
        "http.request.method": "POST", "http.response.status_code": 201, "ratio": 0.25, "retry": False})
    root.add_event("accepted", {"size": 1024, "ok": True}, timestamp=base + 1 * MS)
    ctx = trace.set_span_in_context(root)
    client = gw.start_span("GET user-service", context=ctx, kind=SpanKind.CLIENT, start_time=base + 2 * MS,
                           links=[Link(linked, {"link.reason": "batch"})])
    server = users.start_span("GET /users/{id}", context=trace.set_span_in_context(client),
                              kind=SpanKind.SERVER, start_time=base + 3 * MS)
    server.end(end_time=base + 18 * MS)
    client.set_status(Status(StatusCode.ERROR, "upstream failed"))
    client.end(end_time=base + 20 * MS)
    render = gw.start_span("render", context=ctx, kind=SpanKind.INTERNAL, start_time=base + 25 * MS)
    render.set_status(Status(StatusCode.OK))
    render.end(end_time=base + 40 * MS)
    root.end(end_time=base + 50 * MS)
    for p in providers.values():
        p.force_flush()
        p.shutdown()
    return memory.get_finished_spans()


def capture(out_dir):
    """Runs a capture HTTP server and UDP socket, exports through each protocol, saves bodies."""
    bodies = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            bodies.append((self.headers.get("Content-Type"), self.rfile.read(n)))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    base = 1_700_000_000_000 * MS
    for n, (protocol, path, name) in enumerate([
        ("jaeger-http", "/api/traces", "jaeger/python-otel-1.21-collector.thrift"),
        ("zipkin-json", "/api/v2/spans", "zipkin/python-otel-1.21.json"),
        ("zipkin-proto", "/api/v2/spans", "zipkin/python-otel-1.21.pb"),
    ]):
        bodies.clear()
        emit(protocol, f"http://127.0.0.1:{srv.server_port}{path}", 0x5EED_0000_0000_0000_0000_0000_0000_0001 + n,
             base, batch=True)
        # One request per service: keep the gateway's (three spans, every kind of field).
        content_type, body = max(bodies, key=lambda b: len(b[1]))
        with open(f"{out_dir}/{name}", "wb") as f:
            f.write(body)
        print(name, content_type, len(body), "bytes")
    emit("jaeger-udp", f"127.0.0.1:{udp.getsockname()[1]}", 0x5EED_0000_0000_0000_0000_0000_0000_0010, base,
         batch=True)
    data = max((udp.recvfrom(65535)[0] for _ in range(2)), key=len)
    with open(f"{out_dir}/jaeger/python-otel-1.21-agent.thrift", "wb") as f:
        f.write(data)
    print("jaeger agent datagram", len(data), "bytes")
    srv.shutdown()


def export(protocol, endpoint, query):
    trace_id = int.from_bytes(protocol.encode().ljust(16, b"\0")[:16], "big")
    sent = emit(protocol, endpoint, trace_id, time.time_ns() // 1000 * 1000)
    tid = format(trace_id, "032x")
    body = wait_for_trace(query, tid, len(sent))
    got = spans_by_id(body)

    jaeger = protocol.startswith("jaeger")
    problems = Problems()
    check = problems.check

    def text(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    def norm(attrs):
        return {kv["key"]: norm_value(kv["value"]) for kv in attrs or []}

    kinds = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3}
    check("span count", len(sent), body["spanCount"])
    for s, res, scope, sp in matched_spans(sent, got, problems):
        w = f"{protocol} span {s.name}"
        resource = dict(s.resource.attributes)
        if jaeger:
            # Jaeger's process carries only the service name; this exporter puts the other
            # resource attributes on every span, and the collector mapping leaves them there.
            check(w + " resource", {"service.name": {"stringValue": resource["service.name"]}}, res)
            want_attrs = {k: otlp_value(v) for k, v in {**s.attributes, **resource}.items()}
        else:
            check(w + " resource", {k: {"stringValue": text(v)} for k, v in resource.items()}, res)
            want_attrs = {k: {"stringValue": text(v)} for k, v in s.attributes.items()}
            if s.status.status_code == StatusCode.ERROR:
                # Zipkin carries an error as the `error` tag (the description), which sets the
                # status and stays an attribute, as the collector's Zipkin receiver keeps it.
                want_attrs["error"] = {"stringValue": s.status.description}
        check(w + " attributes", want_attrs, norm(sp.get("attributes")))
        check(w + " scope", (s.instrumentation_scope.name, s.instrumentation_scope.version),
              (scope.get("name"), scope.get("version")))
        check(w + " parent", format(s.parent.span_id, "016x") if s.parent else "", sp.get("parentSpanId", ""))
        # Zipkin has no INTERNAL kind: such spans come back unspecified, as the collector does.
        check(w + " kind", 0 if (not jaeger and s.kind == SpanKind.INTERNAL) else kinds[s.kind], sp.get("kind", 0))
        check(w + " start", s.start_time, int(sp["startTimeUnixNano"]))
        check(w + " end", s.end_time, int(sp["endTimeUnixNano"]))
        want_status = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}[s.status.status_code]
        check(w + " status", (want_status, s.status.description or ""),
              (sp.get("status", {}).get("code", 0), sp.get("status", {}).get("message", "")))
        check(w + " events", [(e.name, e.timestamp, {k: otlp_value(v) for k, v in e.attributes.items()}) for e in s.events],
              [(e["name"], int(e["timeUnixNano"]), norm(e.get("attributes"))) for e in sp.get("events", [])])
        # Jaeger carries links as FOLLOWS_FROM references without attributes; Zipkin has none.
        want_links = [(format(l.context.trace_id, "032x"), format(l.context.span_id, "016x"),
                       {"opentracing.ref_type": {"stringValue": "follows_from"}}) for l in s.links] if jaeger else []
        check(w + " links", want_links,
              [(l["traceId"], l["spanId"], norm(l.get("attributes"))) for l in sp.get("links", [])])

    problems.exit_if_any()
    print(f"{protocol}: all {len(sent)} spans read back as sent")


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(sys.argv[2])
    else:
        export(sys.argv[2], sys.argv[3], sys.argv[4])
