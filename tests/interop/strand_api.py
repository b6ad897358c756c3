"""Reading a trace back from strand's native API, shared by the interop scripts."""

import json
import sys
import time
import urllib.error
import urllib.request


def wait_for_trace(query, trace_id, span_count, attempts=100):
    """GET /api/v1/traces/{trace_id} until it holds `span_count` spans; exits if it never appears."""
    body = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"{query}/api/v1/traces/{trace_id}") as r:
                body = json.load(r)
            if body["spanCount"] >= span_count:
                break
        except urllib.error.HTTPError:
            pass
        time.sleep(0.1)
    if body is None:
        sys.exit(f"trace {trace_id} never appeared")
    return body


class Problems(list):
    """Differences between what was sent and what came back."""

    def check(self, what, want, have):
        if want != have:
            self.append(f"{what}: sent {want!r}, got {have!r}")

    def exit_if_any(self):
        if self:
            print("\n".join(self))
            sys.exit(1)


def matched_spans(sent, got, problems):
    """(sdk span, resource, scope, span) for each sent span that came back; a missing one is
    a problem."""
    for s in sent:
        sid = format(s.context.span_id, "016x")
        if sid not in got:
            problems.append(f"span {s.name} ({sid}) missing")
            continue
        yield (s, *got[sid])


def spans_by_id(body, value=lambda v: v):
    """span id -> (resource attributes {key: value(v)}, scope, span) of an OTLP/JSON answer."""
    got = {}
    for rs in body["resourceSpans"]:
        res = {kv["key"]: value(kv["value"]) for kv in rs["resource"].get("attributes", [])}
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                got[sp["spanId"]] = (res, ss.get("scope", {}), sp)
    return got


def otlp_value(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [otlp_value(x) for x in v]}}
    raise TypeError(type(v))


def norm_value(v):
    """Normalizes an OTLP/JSON AnyValue (ints may be numbers or strings)."""
    if "intValue" in v:
        return {"intValue": str(v["intValue"])}
    if "arrayValue" in v:
        return {"arrayValue": {"values": [norm_value(x) for x in v["arrayValue"].get("values", [])]}}
    return v
