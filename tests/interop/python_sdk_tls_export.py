"""Exports one span with the official OpenTelemetry Python SDK, configured only by the
standard OTEL_EXPORTER_OTLP_* environment variables (endpoint, headers, certificate, client
certificate and key), and says whether the exporter reported success.

usage: python_sdk_tls_export.py (grpc|http) SERVICE_NAME

Prints `exported <trace id>` and exits 0 on success; prints the exporter's result and exits
1 otherwise.
"""

import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

protocol, service = sys.argv[1], sys.argv[2]
if protocol == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": service}))
provider.add_span_processor(SimpleSpanProcessor(memory))
with provider.get_tracer("tls-interop").start_as_current_span("checkout") as span:
    span.set_attribute("transport", protocol + "+tls")
spans = memory.get_finished_spans()
# The exporter is called directly so that its result (not a log line) says what happened.
result = OTLPSpanExporter().export(spans)
trace_id = format(spans[0].context.trace_id, "032x")
if result == SpanExportResult.SUCCESS:
    print("exported", trace_id)
    sys.exit(0)
print("export failed:", result)
sys.exit(1)
