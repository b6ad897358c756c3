"""Exports a multi-service trace with the official OpenTelemetry Python SDK to a running
strand, reads it back through strand's API and checks every field it sent.

usage: python_sdk_export.py (grpc|http) OTLP_ENDPOINT QUERY_URL

Exits 0 when every span, attribute, event, link, status and resource came back as sent;
prints the differences and exits 1 otherwise.
"""

import base64
import json
import sys
import time
import urllib.parse
import urllib.request

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from strand_api import Problems, matched_spans, norm_value, otlp_value, spans_by_id, wait_for_trace

protocol, endpoint, query = sys.argv[1], sys.argv[2], sys.argv[3]

if protocol == "grpc":
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    def exporter():
        return OTLPSpanExporter(endpoint=endpoint, insecure=True, compression=grpc.Compression.Gzip)
else:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    def exporter():
        return OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip)

memory = InMemorySpanExporter()
providers = {}


def tracer(service):
    if service not in providers:
        p = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "interop", "service.instance.num": 3}))
        p.add_span_processor(SimpleSpanProcessor(exporter()))
        p.add_span_processor(SimpleSpanProcessor(memory))
        providers[service] = p
    return providers[service].get_tracer("interop." + service, "2.0.1")


other = tracer("batch-job").start_span("nightly-batch")
other.end()

with tracer("gateway").start_as_current_span("POST /reports", kind=SpanKind.SERVER, attributes={
    "http.request.method": "POST", "http.response.status_code": 201, "ratio": 0.25,
    "retry": False, "tags": ["a", "b"], "codes": [1, 2, 3],
}) as root:
    root.add_event("accepted", {"size": 1024, "ok": True}, timestamp=time.time_ns())
    with tracer("gateway").start_as_current_span("GET user-service", kind=SpanKind.CLIENT):
        with tracer("user-service").start_as_current_span("GET /users/{id}", kind=SpanKind.SERVER,
                                                           links=[Link(other.get_span_context(), {"link.reason": "batch"})]):
            pass
    with tracer("epro-service").start_as_current_span("epro.Submit", kind=SpanKind.SERVER) as epro:
        with tracer("epro-service").start_as_current_span("publish report.submitted", kind=SpanKind.PRODUCER):
            pass
        try:
            raise ValueError("report rejected")
        except ValueError as e:
            epro.record_exception(e)
            epro.set_status(Status(StatusCode.ERROR, "validation failed"))
    with tracer("notify-service").start_as_current_span("consume report.submitted", kind=SpanKind.CONSUMER):
        with tracer("notify-service").start_as_current_span("send sms", kind=SpanKind.INTERNAL) as sms:
            sms.set_status(Status(StatusCode.OK))

for p in providers.values():
    p.force_flush()
    p.shutdown()

sent = [s for s in memory.get_finished_spans() if s.context.trace_id == root.get_span_context().trace_id]
trace_id = format(root.get_span_context().trace_id, "032x")
KINDS = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4, SpanKind.CONSUMER: 5}
STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def attrs(d):
    return {k: otlp_value(v) for k, v in d.items()}


def got_attrs(lst):
    return {kv["key"]: norm_value(kv["value"]) for kv in lst or []}



body = wait_for_trace(query, trace_id, len(sent))
got = spans_by_id(body, norm_value)

problems = Problems()
check = problems.check


check("span count", len(sent), body["spanCount"])
for s, res, scope, sp in matched_spans(sent, got, problems):
    w = f"span {s.name}"
    check(w + " resource", attrs(dict(s.resource.attributes)), res)
    check(w + " scope", (s.instrumentation_scope.name, s.instrumentation_scope.version), (scope["name"], scope["version"]))
    check(w + " trace id", trace_id, sp["traceId"])
    check(w + " parent", format(s.parent.span_id, "016x") if s.parent else "", sp.get("parentSpanId", ""))
    check(w + " name", s.name, sp["name"])
    check(w + " kind", KINDS[s.kind], sp["kind"])
    check(w + " start", s.start_time, int(sp["startTimeUnixNano"]))
    check(w + " end", s.end_time, int(sp["endTimeUnixNano"]))
    check(w + " attributes", attrs(dict(s.attributes)), got_attrs(sp["attributes"]))
    check(w + " status code", STATUS[s.status.status_code], sp["status"].get("code", 0))
    check(w + " status message", s.status.description or "", sp["status"].get("message", ""))
    # The SDK's OTLP encoder sends the "has is_remote" bit (0x100) and "is_remote" (0x200).
    check(w + " flags", 0x100 | (0x200 if s.parent and s.parent.is_remote else 0), sp["flags"])
    check(w + " events", [(e.name, e.timestamp, attrs(dict(e.attributes))) for e in s.events],
          [(e["name"], int(e["timeUnixNano"]), got_attrs(e["attributes"])) for e in sp["events"]])
    check(w + " links", [(format(l.context.trace_id, "032x"), format(l.context.span_id, "016x"), attrs(dict(l.attributes))) for l in s.links],
          [(l["traceId"], l["spanId"], got_attrs(l["attributes"])) for l in sp["links"]])



# --- The same trace through every query API, each in its own shape.
def get(path):
    with urllib.request.urlopen(query + path) as r:
        return json.load(r)


def q(s):
    return urllib.parse.quote(s, safe="")


services = sorted({s.resource.attributes["service.name"] for s in sent})
now_ms = time.time_ns() // 1_000_000

native = get(f"/api/v1/search?service=epro-service&status=error&limit=50")
mine = [t for t in native["traces"] if t["traceId"] == trace_id]
check("native search finds the error trace", 1, len(mine))
if mine:
    t = mine[0]
    check("native summary root", ("gateway", "POST /reports"), (t["rootService"], t["rootName"]))
    check("native summary counts", (len(sent), 1), (t["spanCount"], t["errorCount"]))
    check("native summary services", services, [s["name"] for s in t["services"]])
    check("native summary start", min(s.start_time for s in sent), int(t["startTimeUnixNano"]))

jaeger = get("/api/traces?service=gateway&limit=50&tags=" + q(json.dumps({"http.response.status_code": "201"})))
jt = [t for t in jaeger["data"] if t["traceID"] == trace_id]
check("jaeger search finds the trace by a typed tag", 1, len(jt))
if jt:
    jt = jt[0]
    check("jaeger span count", len(sent), len(jt["spans"]))
    check("jaeger processes", services, sorted({p["serviceName"] for p in jt["processes"].values()}))
    by_name = {sp["operationName"]: sp for sp in jt["spans"]}
    epro_tags = {t["key"]: t["value"] for t in by_name["epro.Submit"]["tags"]}
    check("jaeger error tags", (True, "ERROR", "validation failed"),
          (epro_tags.get("error"), epro_tags.get("otel.status_code"), epro_tags.get("otel.status_description")))
    check("jaeger span.kind", "server", epro_tags.get("span.kind"))
    check("jaeger scope tags", ("interop.epro-service", "2.0.1"), (epro_tags.get("otel.scope.name"), epro_tags.get("otel.scope.version")))
    refs = [r["refType"] for r in by_name["GET /users/{id}"]["references"]]
    check("jaeger references", ["CHILD_OF", "FOLLOWS_FROM"], refs)
    logs = by_name["POST /reports"]["logs"]
    check("jaeger logs", ["accepted"], [l["fields"][0]["value"] for l in logs])
    root_sent = [s for s in sent if s.name == "POST /reports"][0]
    check("jaeger start (us)", root_sent.start_time // 1000, by_name["POST /reports"]["startTime"])

since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
v3 = get(f"/api/v3/traces?query.service_name=notify-service&query.start_time_min={since}&query.start_time_max={until}&query.search_depth=50")
v3_spans = [sp for rs in v3["result"]["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"] if sp["traceId"] == trace_id]
check("api_v3 returns the whole trace as OTLP/JSON", len(sent), len(v3_spans))
v3c = get(f"/api/v3/traces?queryServiceName=x&query.serviceName=notify-service&query.startTimeMin={since}&query.startTimeMax={until}")
check("api_v3 camelCase parameters", True, any(sp["traceId"] == trace_id for rs in v3c["result"]["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]))

tempo = get("/api/search?limit=50&tags=" + q("service.name=epro-service status=error"))
tt = [t for t in tempo["traces"] if t["traceID"] == trace_id]
check("tempo search finds the trace", 1, len(tt))
if tt:
    check("tempo search root", ("gateway", "POST /reports"), (tt[0]["rootServiceName"], tt[0]["rootTraceName"]))
    check("tempo service stats", services, sorted(tt[0]["serviceStats"].keys()))
tempo_trace = get(f"/api/traces/{trace_id}?format=tempo")
b64 = base64.b64encode(bytes.fromhex(trace_id)).decode()
tempo_ids = {sp["traceId"] for rs in tempo_trace["batches"] for ss in rs["scopeSpans"] for sp in ss["spans"]}
check("tempo trace ids are base64", {b64}, tempo_ids)

deps = get(f"/api/dependencies?endTs={now_ms + 60_000}&lookback=3600000")
edges = {(d["parent"], d["child"]) for d in deps["data"]}
for edge in [("gateway", "user-service"), ("gateway", "epro-service"), ("gateway", "notify-service")]:
    check(f"jaeger dependency {edge}", True, edge in edges)

problems.exit_if_any()
print(f"{protocol}: {len(sent)} spans of trace {trace_id} read back field for field, and through the native, Jaeger v1, api_v3 and Tempo APIs")
