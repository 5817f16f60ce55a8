"""Bad input on every ingest endpoint (issue #3): each case asserts the
status, that the error names the problem, that the server still answers
`SELECT 1`, and that it holds exactly the rows acknowledged before (nothing
acknowledged lost, nothing refused written).

Endpoints: OTLP/HTTP (/v1/logs, /v1/traces, /v1/metrics; protobuf and JSON),
OTLP/gRPC (the three Export services, called with raw bytes through a generic
channel), Prometheus remote write (/api/v1/write; WriteRequest protobuf and
snappy built by hand in remote_write.py), line protocol (/api/v2/write,
/write) and JSON (/v1/ingest/{table}) for the cases tests/e2e/ingest.rs does
not cover, and backpressure (a full write buffer) on all of them plus pgwire.

Most servers here run with `--max-body-size 64KiB`, so that oversized bodies
and decompression bombs stay small.
"""

import datetime as dt
import gzip
import json
import re
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
import uuid

import grpc
import psycopg
import pytest
from conftest import Server
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from remote_write import pb_series, snappy, snappy_bomb, varint, write_request

LIMIT = 64 * 1024
LIMIT_FLAG = ["--max-body-size", "64KiB"]

# google.rpc.Code
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z in ns


# ---------------------------------------------------------------------------
# Servers


@pytest.fixture
def start_server(tmp_path):
    """Starts servers with extra flags; each has its own directory."""
    servers = []

    def start(*extra):
        base = tmp_path / f"server{len(servers)}"
        data = base / "data"
        data.mkdir(parents=True)
        s = Server(data, extra)
        servers.append(s)
        s.start()
        return s

    yield start
    for s in servers:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def small(start_server):
    """A server with a 64 KiB body limit."""
    return start_server(*LIMIT_FLAG)


def log_tail(server, n=3000) -> str:
    return "\n--- server log (tail) ---\n" + server.log()[-n:]


class Acked:
    """The rows acknowledged so far, by table. `check()` asserts the server
    is up, answers SQL, and holds exactly these rows."""

    def __init__(self, server):
        self.server = server
        self.rows = {}

    def add(self, table, n):
        self.rows[table] = self.rows.get(table, 0) + n

    def check(self, what=""):
        assert self.server.proc.poll() is None, f"server exited after {what}" + log_tail(self.server)
        with psycopg.connect(self.server.dsn(), autocommit=True, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
            for table, n in self.rows.items():
                got = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                assert got == n, f"after {what}: {table} has {got} rows, {n} were acknowledged"


def seed_line_protocol(server, acked):
    status, _, body = server.post(
        "/api/v2/write?bucket=b&precision=s",
        b"seed,host=a v=1 1704067200\nseed,host=b v=2 1704067201\nseed,host=c v=3 1704067202\n",
        {},
    )
    assert status == 204, (status, body)
    acked.add("seed", 3)


def json_error(body) -> str:
    """The message of a `{"error": "..."}` body."""
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str), doc
    return doc["error"]


def assert_json_error(status, headers, body, expected_status, *substrings):
    assert status == expected_status, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), dict(headers)
    message = json_error(body)
    for s in substrings:
        assert s in message, (s, message)
    return message


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


# ---------------------------------------------------------------------------
# OTLP messages


def kv(key, value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def resource(service, pad=0) -> Resource:
    attrs = [kv("service.name", service)]
    if pad:
        attrs.append(kv("padding", "x" * pad))
    return Resource(attributes=attrs)


def new_trace_id() -> bytes:
    return os.urandom(16)


def new_span_id() -> bytes:
    return os.urandom(8)


def make_span(name, trace_id=None, span_id=None, start=T0, end=T0 + 1000) -> Span:
    return Span(
        name=name,
        trace_id=new_trace_id() if trace_id is None else trace_id,
        span_id=new_span_id() if span_id is None else span_id,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        kind=Span.SPAN_KIND_SERVER,
    )


def traces_request(spans, service="bad-input", pad=0) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource(service, pad), scope_spans=[ScopeSpans(spans=spans)],
    )])


def make_log(body, span_id=b"", trace_id=b"", t=T0) -> LogRecord:
    return LogRecord(time_unix_nano=t, body=AnyValue(string_value=body), span_id=span_id, trace_id=trace_id)


def logs_request(records, service="bad-input", pad=0) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=resource(service, pad), scope_logs=[ScopeLogs(log_records=records)],
    )])


def gauge(name, value=1.5, t=T0) -> Metric:
    return Metric(name=name, gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=t, as_double=value)]))


def metrics_request(metrics, service="bad-input", pad=0) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        resource=resource(service, pad), scope_metrics=[ScopeMetrics(metrics=metrics)],
    )])


SIGNALS = ["logs", "traces", "metrics"]

# signal -> (table of the good record, response class, rejected-count field)
SIGNAL_INFO = {
    "logs": ("otel_logs", ExportLogsServiceResponse, "rejected_log_records"),
    "traces": ("otel_traces", ExportTraceServiceResponse, "rejected_spans"),
    "metrics": ("otel_metrics_gauge", ExportMetricsServiceResponse, "rejected_data_points"),
}

GRPC_METHOD = {
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}


def good_request(signal, pad=0):
    """A request with one good record for `signal` (and a padding resource
    attribute of `pad` bytes)."""
    if signal == "logs":
        return logs_request([make_log("hello")], pad=pad)
    if signal == "traces":
        return traces_request([make_span("GET /")], pad=pad)
    return metrics_request([gauge("temperature")], pad=pad)


def good_json(signal, pad=0) -> bytes:
    """The OTLP JSON of a request of `signal` with one resource (with a
    padding attribute of `pad` bytes) and no records."""
    res = {"attributes": [{"key": "service.name", "value": {"stringValue": "bad-input"}}]}
    if pad:
        res["attributes"].append({"key": "padding", "value": {"stringValue": "x" * pad}})
    key = {"logs": "resourceLogs", "traces": "resourceSpans", "metrics": "resourceMetrics"}[signal]
    return json.dumps({key: [{"resource": res}]}).encode()


def otlp_post(server, signal, body, content_type=PROTOBUF, **headers):
    h = {"Content-Type": content_type}
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return server.post(f"/v1/{signal}", body, h)


def assert_otlp_error(status, headers, body, expected_status, encoding, code, *substrings):
    """An OTLP/HTTP error: `expected_status` and a google.rpc.Status body in
    `encoding` (protobuf or JSON) with `code` and a message containing every
    substring. Returns the Status message."""
    assert status == expected_status, (status, body)
    ctype = headers.get("Content-Type", "")
    if encoding == PROTOBUF:
        assert ctype.startswith("application/x-protobuf"), (ctype, body)
        st = status_pb2.Status.FromString(body)
        got_code, message = st.code, st.message
    else:
        assert ctype.startswith("application/json"), (ctype, body)
        doc = json.loads(body)
        assert set(doc) >= {"code", "message"}, doc
        got_code, message = doc["code"], doc["message"]
        st = doc
    assert got_code == code, (got_code, message)
    for s in substrings:
        assert s in message, (s, message)
    return st


def seed_otlp(server, acked, signal):
    """Writes one good record of every signal over OTLP/HTTP."""
    for sig in SIGNALS if signal is None else [signal]:
        status, _, body = otlp_post(server, sig, good_request(sig).SerializeToString())
        assert status == 200, (sig, status, body)
        resp = SIGNAL_INFO[sig][1].FromString(body)
        assert not resp.HasField("partial_success") or getattr(
            resp.partial_success, SIGNAL_INFO[sig][2]) == 0, resp
        acked.add(SIGNAL_INFO[sig][0], 1)


# ---------------------------------------------------------------------------
# OTLP/HTTP: whole-request errors


# id -> (content type, extra headers, body(signal), status, google.rpc code, substrings)
OTLP_HTTP_CASES = {
    "not_protobuf": (
        PROTOBUF, {}, lambda sig: b"not protobuf at all \xff\xfe",
        400, INVALID_ARGUMENT, ["not a valid OTLP protobuf message"],
    ),
    "truncated_protobuf": (
        PROTOBUF, {}, lambda sig: good_request(sig).SerializeToString()[:-3],
        400, INVALID_ARGUMENT, ["not a valid OTLP protobuf message"],
    ),
    "invalid_json": (
        JSON, {}, lambda sig: b'{"resourceSpans": [{"resource": ',
        400, INVALID_ARGUMENT, ["not a valid OTLP JSON message"],
    ),
    "json_wrong_shape": (
        JSON, {}, lambda sig: b'{"resourceLogs": 7, "resourceSpans": 7, "resourceMetrics": 7}',
        400, INVALID_ARGUMENT, ["not a valid OTLP JSON message"],
    ),
    "unsupported_content_type": (
        "text/plain", {}, lambda sig: b"hello",
        415, INVALID_ARGUMENT, ["Content-Type", "text/plain"],
    ),
    "form_urlencoded_content_type": (  # what urllib sends when none is given
        None, {}, lambda sig: good_request(sig).SerializeToString(),
        415, INVALID_ARGUMENT, ["Content-Type"],
    ),
    "unsupported_content_encoding_protobuf": (
        PROTOBUF, {"Content-Encoding": "br"}, lambda sig: good_request(sig).SerializeToString(),
        415, INVALID_ARGUMENT, ["Content-Encoding", "br"],
    ),
    "unsupported_content_encoding_json": (
        JSON, {"Content-Encoding": "br"}, lambda sig: good_json(sig),
        415, INVALID_ARGUMENT, ["Content-Encoding", "br"],
    ),
    "too_large_protobuf": (
        PROTOBUF, {}, lambda sig: good_request(sig, pad=LIMIT + 1024).SerializeToString(),
        413, RESOURCE_EXHAUSTED, ["larger than 65536 bytes", "--max-body-size"],
    ),
    "too_large_json": (
        JSON, {}, lambda sig: good_json(sig, pad=LIMIT + 1024),
        413, RESOURCE_EXHAUSTED, ["larger than 65536 bytes", "--max-body-size"],
    ),
    "gzip_bomb_protobuf": (
        PROTOBUF, {"Content-Encoding": "gzip"},
        lambda sig: gz(good_request(sig, pad=4 << 20).SerializeToString()),
        413, RESOURCE_EXHAUSTED, ["gzip body expands past 65536 bytes"],
    ),
    "gzip_bomb_json": (
        JSON, {"Content-Encoding": "gzip"}, lambda sig: gz(good_json(sig, pad=4 << 20)),
        413, RESOURCE_EXHAUSTED, ["gzip body expands past 65536 bytes"],
    ),
    "invalid_gzip_protobuf": (
        PROTOBUF, {"Content-Encoding": "gzip"}, lambda sig: good_request(sig).SerializeToString(),
        400, INVALID_ARGUMENT, ["not valid gzip"],
    ),
    "truncated_gzip_json": (
        JSON, {"Content-Encoding": "gzip"}, lambda sig: gz(good_json(sig, pad=1000))[:-20],
        400, INVALID_ARGUMENT, ["not valid gzip"],
    ),
}


@pytest.mark.parametrize("case", list(OTLP_HTTP_CASES))
@pytest.mark.parametrize("signal", SIGNALS)
def test_otlp_http_refuses_bad_request(small, signal, case):
    content_type, headers, make_body, status, code, substrings = OTLP_HTTP_CASES[case]
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_otlp(small, acked, signal)
    body = make_body(signal)
    if case.startswith("gzip_bomb"):
        assert len(body) < LIMIT // 4, f"the bomb is small: {len(body)} bytes"
    h = dict(headers)
    if content_type is not None:
        h["Content-Type"] = content_type
    got_status, got_headers, got_body = small.post(f"/v1/{signal}", body, h)
    # The error is in the request's encoding; when the Content-Type is not
    # understood the server cannot know it and answers JSON.
    encoding = PROTOBUF if content_type == PROTOBUF else JSON
    assert_otlp_error(got_status, got_headers, got_body, status, encoding, code, *substrings)
    acked.check(f"{case} on /v1/{signal}")
    # And the endpoint still takes good data.
    seed_otlp(small, acked, signal)
    acked.check(f"a good export after {case}")


# ---------------------------------------------------------------------------
# OTLP/HTTP: partial success


def query(server, sql, params=()):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def test_otlp_http_traces_partial_success_bad_trace_id(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_otlp(small, acked, None)
    good = make_span("good span")
    bad = make_span("bad span", trace_id=b"\x01\x02\x03\x04\x05")
    status, headers, body = otlp_post(small, "traces", traces_request([good, bad]).SerializeToString())
    assert status == 200, (status, body)
    assert headers.get("Content-Type", "").startswith("application/x-protobuf"), dict(headers)
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 1, resp
    msg = resp.partial_success.error_message
    assert "trace_id" in msg and "16 bytes" in msg and "not 5" in msg, msg
    assert "bad span" in msg, msg
    acked.add("otel_traces", 1)
    acked.check("a traces export with one bad trace_id")
    rows = query(small, "SELECT name, trace_id FROM otel_traces WHERE span_id = %s", (good.span_id.hex(),))
    assert rows == [("good span", good.trace_id.hex())], rows


def test_otlp_http_traces_partial_success_no_start_time(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_otlp(small, acked, "traces")
    good = make_span("with start")
    bad = make_span("without start", start=0, end=T0)
    status, _, body = otlp_post(small, "traces", traces_request([bad, good]).SerializeToString())
    assert status == 200, (status, body)
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 1, resp
    assert "start_time_unix_nano" in resp.partial_success.error_message, resp
    acked.add("otel_traces", 1)
    acked.check("a span without a start time")
    assert query(small, "SELECT name FROM otel_traces WHERE span_id = %s", (good.span_id.hex(),)) == [
        ("with start",)
    ]


def test_otlp_http_json_logs_partial_success_bad_span_id(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_otlp(small, acked, "logs")
    service = f"json-{uuid.uuid4().hex[:8]}"
    trace_id, span_id = new_trace_id().hex(), new_span_id().hex()
    payload = {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": str(T0), "body": {"stringValue": "good"}, "traceId": trace_id, "spanId": span_id},
            {"timeUnixNano": str(T0), "body": {"stringValue": "bad"}, "traceId": trace_id, "spanId": "eee19b"},
        ]}],
    }]}
    status, headers, body = otlp_post(small, "logs", json.dumps(payload).encode(), JSON)
    assert status == 200, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), dict(headers)
    answer = json.loads(body)
    ps = answer.get("partialSuccess")
    assert ps and ps.get("rejectedLogRecords") == "1", answer
    assert "span_id" in ps.get("errorMessage", "") and "not 3" in ps["errorMessage"], answer
    acked.add("otel_logs", 1)
    acked.check("a JSON logs export with one bad spanId")
    rows = query(small, "SELECT body, span_id FROM otel_logs WHERE service_name = %s", (service,))
    assert rows == [("good", span_id)], rows


def test_otlp_http_histogram_bucket_mismatch_is_rejected(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_otlp(small, acked, "metrics")
    name = f"latency_{uuid.uuid4().hex[:8]}"
    hist = Metric(name=name, histogram=Histogram(
        aggregation_temporality=2,
        data_points=[
            HistogramDataPoint(time_unix_nano=T0, count=3, sum=1.0, bucket_counts=[1, 2], explicit_bounds=[0.5]),
            HistogramDataPoint(time_unix_nano=T0 + 1, count=6, sum=2.0, bucket_counts=[1, 2, 3],
                               explicit_bounds=[0.5]),
        ],
    ))
    status, _, body = otlp_post(small, "metrics", metrics_request([hist]).SerializeToString())
    assert status == 200, (status, body)
    resp = ExportMetricsServiceResponse.FromString(body)
    assert resp.partial_success.rejected_data_points == 1, resp
    msg = resp.partial_success.error_message
    assert "3 bucket counts for 1 explicit bounds" in msg and name in msg, msg
    acked.add("otel_metrics_histogram", 1)
    acked.check("a histogram with mismatched buckets")
    rows = query(small, "SELECT count, bucket_counts FROM otel_metrics_histogram WHERE metric_name = %s", (name,))
    assert rows == [(3, [1, 2])], rows


def _bad_link_span():
    sp = make_span("bad link")
    sp.links.add(trace_id=b"\x01\x02", span_id=new_span_id())
    return sp


def _bad_event_span():
    sp = make_span("bad event")
    sp.events.add(name="boom", time_unix_nano=2**63 + 5)
    return sp


def _exemplar_gauge(name):
    m = gauge(name)
    m.gauge.data_points[0].exemplars.add(time_unix_nano=T0, as_double=1.0, span_id=b"\x01")
    return m


# id -> (signal, bad record(s) builder, substrings of error_message)
OTLP_REJECTIONS = {
    "log_trace_id_3_bytes": ("logs", lambda: logs_request([make_log("bad", trace_id=b"abc")]),
                             ["trace_id must be 16 bytes, not 3"]),
    "log_time_past_2262": ("logs", lambda: logs_request([make_log("bad", t=2**63 + 1)]),
                           ["time_unix_nano", "past the year 2262"]),
    "span_without_span_id": ("traces", lambda: traces_request([make_span("no id", span_id=b"")]),
                             ["no span_id"]),
    "span_without_trace_id": ("traces", lambda: traces_request([make_span("no trace", trace_id=b"")]),
                              ["no trace_id"]),
    "span_end_before_start": ("traces", lambda: traces_request([make_span("backwards", start=T0, end=T0 - 1)]),
                              ["is before start_time_unix_nano"]),
    "span_parent_id_wrong_length": ("traces", lambda: traces_request([Span(
        name="orphan", trace_id=new_trace_id(), span_id=new_span_id(), parent_span_id=b"\x01\x02\x03\x04",
        start_time_unix_nano=T0)]), ["parent_span_id must be 8 bytes, not 4"]),
    "span_link_trace_id_wrong_length": ("traces", lambda: traces_request([_bad_link_span()]),
                                        ["link trace_id must be 16 bytes, not 2"]),
    "span_event_time_past_2262": ("traces", lambda: traces_request([_bad_event_span()]),
                                  ["event time_unix_nano", "2262"]),
    "gauge_without_time": ("metrics", lambda: metrics_request([gauge("no_time", t=0)]),
                           ["no time_unix_nano"]),
    "exemplar_span_id_wrong_length": ("metrics", lambda: metrics_request([_exemplar_gauge("bad_exemplar")]),
                                      ["exemplar span_id must be 8 bytes, not 1"]),
}


@pytest.mark.parametrize("case", list(OTLP_REJECTIONS))
def test_otlp_http_rejects_bad_record_keeps_good(small, case):
    """One bad record next to a good one: 200, partial_success names the
    problem, the good record is stored."""
    signal, make_bad, substrings = OTLP_REJECTIONS[case]
    table, response, field = SIGNAL_INFO[signal]
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_otlp(small, acked, signal)
    req = good_request(signal)
    bad = make_bad()
    # Append the bad request's resource after the good one: both in one export.
    getattr(req, f"resource_{signal}" if signal != "traces" else "resource_spans").extend(
        getattr(bad, f"resource_{signal}" if signal != "traces" else "resource_spans"))
    status, _, body = otlp_post(small, signal, req.SerializeToString())
    assert status == 200, (status, body)
    resp = response.FromString(body)
    assert getattr(resp.partial_success, field) == 1, resp
    for sub in substrings:
        assert sub in resp.partial_success.error_message, (sub, resp)
    acked.add(table, 1)
    acked.check(f"partial success {case}")


# ---------------------------------------------------------------------------
# OTLP/gRPC


def grpc_call(server, signal, payload: bytes, compression=None):
    """Calls the Export method of `signal` with raw bytes; returns (response
    bytes, None) or (None, the grpc.RpcError)."""
    with grpc.insecure_channel(server.grpc_endpoint) as channel:
        method = channel.unary_unary(GRPC_METHOD[signal])
        try:
            return method(payload, timeout=30, compression=compression), None
        except grpc.RpcError as e:
            return None, e


def status_details(err) -> status_pb2.Status:
    """The google.rpc.Status of `grpc-status-details-bin`, if any."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def seed_grpc(server, acked, signal):
    resp, err = grpc_call(server, signal, good_request(signal).SerializeToString())
    assert err is None, (err.code(), err.details())
    msg = SIGNAL_INFO[signal][1].FromString(resp)
    assert getattr(msg.partial_success, SIGNAL_INFO[signal][2]) == 0, msg
    acked.add(SIGNAL_INFO[signal][0], 1)


GRPC_CASES = {
    # id -> (payload(signal), compression, expected code, substrings of details (lowercase))
    "garbage": (
        lambda sig: b"\xff\xfe garbage, not protobuf", None,
        grpc.StatusCode.INVALID_ARGUMENT, ["failed to decode protobuf message: invalid wire type value: 7"],
    ),
    "truncated": (
        lambda sig: good_request(sig).SerializeToString()[:-3], None,
        grpc.StatusCode.INVALID_ARGUMENT, ["failed to decode protobuf message"],
    ),
    "too_large": (
        lambda sig: good_request(sig, pad=LIMIT + 1024).SerializeToString(), None,
        # docs/ingest.md quotes tonic's texts.
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        ["error, decoded message length too large: found ", " bytes, the limit is: 65536 bytes"],
    ),
    # The client gzips a 4 MiB message into a few KiB; it expands past the limit.
    "gzip_bomb": (
        lambda sig: good_request(sig, pad=4 << 20).SerializeToString(), grpc.Compression.Gzip,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        ["error decompressing: size limit, of 65536 bytes, exceeded while decompressing message"],
    ),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
@pytest.mark.parametrize("signal", SIGNALS)
def test_otlp_grpc_refuses_bad_message(small, signal, case):
    make, compression, code, substrings = GRPC_CASES[case]
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_grpc(small, acked, signal)
    resp, err = grpc_call(small, signal, make(signal), compression)
    assert err is not None, f"{case} was accepted: {resp!r}"
    assert err.code() == code, (err.code(), err.details())
    for s in substrings:
        assert s in (err.details() or "").lower(), (s, err.details())
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Resending will not help: no RetryInfo.
        st = status_details(err)
        assert st is None or not any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in st.details), st
    acked.check(f"gRPC {case} on {signal}")
    seed_grpc(small, acked, signal)
    acked.check(f"a good gRPC export after {case}")


def test_otlp_grpc_partial_success(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    for sig in SIGNALS:
        seed_grpc(small, acked, sig)

    good = make_span("good grpc span")
    bad = make_span("bad grpc span", trace_id=b"\x01\x02\x03\x04\x05")
    resp, err = grpc_call(small, "traces", traces_request([good, bad]).SerializeToString())
    assert err is None, (err.code(), err.details())
    r = ExportTraceServiceResponse.FromString(resp)
    assert r.partial_success.rejected_spans == 1, r
    assert "trace_id" in r.partial_success.error_message, r
    acked.add("otel_traces", 1)

    good_log = make_log("good grpc log", span_id=new_span_id())
    bad_log = make_log("bad grpc log", span_id=b"\x01\x02\x03")
    resp, err = grpc_call(small, "logs", logs_request([good_log, bad_log]).SerializeToString())
    assert err is None, (err.code(), err.details())
    r = ExportLogsServiceResponse.FromString(resp)
    assert r.partial_success.rejected_log_records == 1, r
    assert "span_id" in r.partial_success.error_message, r
    acked.add("otel_logs", 1)

    name = f"grpc_latency_{uuid.uuid4().hex[:8]}"
    hist = Metric(name=name, histogram=Histogram(aggregation_temporality=2, data_points=[
        HistogramDataPoint(time_unix_nano=T0, count=1, bucket_counts=[1, 0], explicit_bounds=[1.0]),
        HistogramDataPoint(time_unix_nano=T0, count=1, bucket_counts=[1], explicit_bounds=[1.0, 2.0]),
    ]))
    resp, err = grpc_call(small, "metrics", metrics_request([hist]).SerializeToString())
    assert err is None, (err.code(), err.details())
    r = ExportMetricsServiceResponse.FromString(resp)
    assert r.partial_success.rejected_data_points == 1, r
    assert "bucket counts" in r.partial_success.error_message, r
    acked.add("otel_metrics_histogram", 1)

    acked.check("gRPC partial successes")
    assert query(small, "SELECT name FROM otel_traces WHERE span_id = %s", (good.span_id.hex(),)) == [
        ("good grpc span",)
    ]
    assert query(small, "SELECT body FROM otel_logs WHERE span_id = %s", (good_log.span_id.hex(),)) == [
        ("good grpc log",)
    ]


# ---------------------------------------------------------------------------
# Prometheus remote write (bodies built by tests/python/remote_write.py)

REMOTE_WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

NOW_MS = int(time.time() * 1000)


def remote_write(server, body, **headers):
    h = dict(REMOTE_WRITE_HEADERS)
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return server.post("/api/v1/write", body, h)


SEEDS = iter(range(1_000_000))


def seed_remote_write(server, acked):
    # New samples each time: the same ones again would replace the stored
    # ones (a remote-write table is keyed by labels and time).
    t = NOW_MS + next(SEEDS) * 2000
    body = snappy(write_request(
        pb_series([("__name__", "rw_seed"), ("job", "a")], [(1.0, t), (2.0, t + 1000)]),
    ))
    status, _, resp = remote_write(server, body)
    assert status == 204, (status, resp)
    acked.add("rw_seed", 2)


def test_snappy_encoders_are_valid_snappy(server):
    """The hand-made encoders produce real snappy (default 64 MiB limit):
    a 200 KiB all-literal body in several chunks is written and read back,
    and the copy-based bomb decompresses (to bytes that are no WriteRequest:
    the error is about protobuf, not snappy)."""
    acked = Acked(server)
    series = [
        pb_series([("__name__", "rw_check"), ("instance", f"host-{i}"), ("pad", "x" * 10_000)],
                  [(float(i), NOW_MS + i)])
        for i in range(20)
    ]
    body = snappy(write_request(*series))
    assert len(body) > 3 * 65536
    status, _, resp = remote_write(server, body)
    assert status == 204, (status, resp)
    acked.add("rw_check", 20)
    acked.check("a good remote write")
    rows = query(server, "SELECT instance, value, length(pad) FROM rw_check ORDER BY time")
    assert rows == [(f"host-{i}", float(i), 10_000) for i in range(20)], rows[:3]

    status, headers, resp = remote_write(server, snappy_bomb(4096))
    assert_json_error(status, headers, resp, 400, "WriteRequest protobuf")
    acked.check("a decompressible non-protobuf body")


RW_CASES = {
    # id -> (body, extra headers, status, substrings)
    "not_snappy": (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage", {}, 400, ["not snappy-compressed"]),
    "snappy_framed_format": (
        b"\xff\x06\x00\x00sNaPpY\x01\x05\x00\x00\x00\x00\x00\x00\x00", {}, 400,
        ["not snappy-compressed", "framed format"],
    ),
    "snappy_truncated": (snappy(b"x" * 1000)[:500], {}, 400, ["not snappy-compressed"]),
    "snappy_of_garbage": (
        snappy(b"\xff\xfe this is not a WriteRequest \x07"), {}, 400, ["WriteRequest protobuf"],
    ),
    "content_encoding_gzip": (
        gz(write_request(pb_series([("__name__", "rw_gz")], [(1.0, NOW_MS)]))), {"Content-Encoding": "gzip"},
        415, ["Content-Encoding", "gzip", "snappy"],
    ),
    "remote_write_2_0": (
        snappy(write_request(pb_series([("__name__", "rw_v2")], [(1.0, NOW_MS)]))),
        {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"},
        415, ["remote write 2.0 is not supported", "prometheus.WriteRequest"],
    ),
    "snappy_header_bomb": (varint(2**31) + b"\x00a", {}, 413, ["expands to 2147483648 bytes", "--max-body-size"]),
    "snappy_real_bomb": (snappy_bomb(4096), {}, 413, ["expands to 262145 bytes", "--max-body-size"]),
    "body_past_limit": (
        snappy(write_request(pb_series([("__name__", "rw_big"), ("pad", "x" * (LIMIT + 1024))], [(1.0, NOW_MS)]))),
        {}, 413, ["larger than 65536 bytes", "--max-body-size"],
    ),
}


@pytest.mark.parametrize("case", list(RW_CASES))
def test_remote_write_refuses_bad_body(small, case):
    body, headers, status, substrings = RW_CASES[case]
    if case == "snappy_real_bomb":
        assert len(body) < LIMIT // 4
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_remote_write(small, acked)
    got_status, got_headers, got_body = small.post("/api/v1/write", body, {**REMOTE_WRITE_HEADERS, **headers})
    assert_json_error(got_status, got_headers, got_body, status, *substrings)
    acked.check(f"remote write {case}")
    seed_remote_write(small, acked)
    acked.check(f"a good remote write after {case}")


def test_remote_write_rejects_bad_series_keeps_good(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    seed_remote_write(small, acked)
    body = snappy(write_request(
        pb_series([("__name__", "rw_good"), ("job", "api")], [(1.0, NOW_MS), (2.0, NOW_MS + 1000)]),
        pb_series([("job", "nameless")], [(3.0, NOW_MS)]),
        pb_series([("__name__", "rw_value_label"), ("value", "oops")], [(4.0, NOW_MS)]),
    ))
    status, headers, resp = remote_write(small, body)
    msg = assert_json_error(status, headers, resp, 400, "2 series rejected", "2 samples written")
    assert "series 2: series has no __name__ label" in msg, msg
    assert 'series 3: metric "rw_value_label": label "value" would collide' in msg, msg
    acked.add("rw_good", 2)
    acked.check("a remote write with bad series")
    assert query(small, "SELECT job, value FROM rw_good ORDER BY time") == [("api", 1.0), ("api", 2.0)]
    assert query(small, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'rw_value_label'") == [
        (0,)
    ]


# id -> (labels, samples, substring of the rejection)
RW_BAD_SERIES = {
    "empty_name": ([("__name__", ""), ("job", "a")], [(1.0, NOW_MS)], "empty __name__ label"),
    "label_time": ([("__name__", "rw_t"), ("time", "x")], [(1.0, NOW_MS)], 'label "time" would collide'),
    "invalid_label_name": ([("__name__", "rw_t"), ("bad-name", "x")], [(1.0, NOW_MS)],
                           'label name "bad-name" is not valid'),
    "duplicate_label": ([("__name__", "rw_t"), ("job", "a"), ("job", "b")], [(1.0, NOW_MS)],
                        'label "job" appears twice'),
    "timestamp_out_of_range": ([("__name__", "rw_t")], [(1.0, 2**62)], "out of range"),
    "name_too_long": ([("__name__", "m" * 200)], [(1.0, NOW_MS)], "is not a table name"),
}


@pytest.mark.parametrize("case", list(RW_BAD_SERIES))
def test_remote_write_rejects_each_bad_series_reason(small, case):
    labels, samples, reason = RW_BAD_SERIES[case]
    acked = Acked(small)
    seed_remote_write(small, acked)
    body = snappy(write_request(
        pb_series(labels, samples),
        pb_series([("__name__", "rw_fine"), ("job", "ok")], [(1.0, NOW_MS)]),
    ))
    status, headers, resp = remote_write(small, body)
    msg = assert_json_error(status, headers, resp, 400, "1 series rejected", "1 sample written", "series 1: ")
    assert reason in msg, (reason, msg)
    acked.add("rw_fine", 1)
    acked.check(f"remote write {case}")


def test_remote_write_into_table_declared_in_sql(small):
    """Remote write into a table created with SQL (TEXT label column, DOUBLE
    value): the sample fits and is written."""
    acked = Acked(small)
    with psycopg.connect(small.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE rw_sql (time TIMESTAMP NOT NULL, job TEXT, value DOUBLE)")
    acked.add("rw_sql", 0)
    status, _, resp = remote_write(small, snappy(write_request(
        pb_series([("__name__", "rw_sql"), ("job", "api")], [(1.0, NOW_MS)]))))
    assert status == 204, (status, resp)
    acked.add("rw_sql", 1)
    acked.check("remote write into a SQL table")


# ---------------------------------------------------------------------------
# Line protocol and JSON: what tests/e2e/ingest.rs does not cover (it checks
# only the status of unknown precision, br, bad gzip, 413 and gzip bomb on
# /write, per-line rejection with a text-vs-double conflict, and for JSON a
# conflicting element, a non-object element and an unparsable array).

LP_PATHS = ["/api/v2/write?bucket=b&org=o", "/write?db=d"]


def lp_cases():
    bomb = gz(b"bomb,host=a v=1 1\n" * 300_000)  # ~5 MiB of line protocol
    return {
        # id -> (query suffix, headers, body, status, substrings)
        "unknown_precision": ("&precision=h", {}, b"m v=1 1", 400, ['unknown precision "h"', "ns, us, ms or s"]),
        "content_encoding_br": ("", {"Content-Encoding": "br"}, b"m v=1 1", 415, ['Content-Encoding "br"']),
        "invalid_gzip": ("", {"Content-Encoding": "gzip"}, b"m v=1 1", 400, ["not valid gzip"]),
        "body_past_limit": (
            "", {}, b"".join(b"big,host=h%d v=1 %d\n" % (i, i) for i in range(4000)), 413,
            ["larger than 65536 bytes", "--max-body-size"],
        ),
        "gzip_bomb": ("", {"Content-Encoding": "gzip"}, bomb, 413, ["gzip body expands past 65536 bytes"]),
        "invalid_utf8": ("", {}, b"m,host=\xff\xfe v=1 1\n", 400, ["UTF-8"]),
        "invalid_utf8_gzip": ("", {"Content-Encoding": "gzip"}, gz(b"m v=\"\xc3\x28\" 1\n"), 400, ["UTF-8"]),
    }


LP_CASES = list(lp_cases())


@pytest.mark.parametrize("case", LP_CASES)
@pytest.mark.parametrize("path", LP_PATHS)
def test_line_protocol_refuses_bad_request(small, path, case):
    suffix, headers, body, status, substrings = lp_cases()[case]
    acked = Acked(small)
    seed_line_protocol(small, acked)
    got = small.post(path + suffix, body, headers)
    assert_json_error(*got, status, *substrings)
    acked.check(f"line protocol {case} on {path}")
    # No table of the refused body appeared.
    assert query(small, "SELECT table_name FROM information_schema.tables WHERE table_name IN ('m', 'big', 'bomb')") == []


def post_type_conflicts(server, path, acked, table, body, summary, conflicts, written):
    """Posts line protocol `body` to `table`, expects a 400 naming `summary`
    and each of `conflicts`, and acknowledges the `written` lines that fit."""
    status, headers, resp = server.post(path, body, {})
    msg = assert_json_error(status, headers, resp, 400, summary)
    for conflict in conflicts:
        assert conflict in msg, msg
    acked.add(table, written)
    acked.check("line protocol type conflicts")


@pytest.mark.parametrize("path", LP_PATHS)
def test_line_protocol_type_conflict_names_column_and_types(small, path):
    """Columns created by line protocol: a later line with another type is
    rejected alone, naming the column and both types."""
    acked = Acked(small)
    status, _, body = small.post(path, b"lpt,host=a n=1i,ok=t,x=1.5 1704067200000000000\n", {})
    assert status == 204, (status, body)
    acked.add("lpt", 1)
    post_type_conflicts(
        small, path, acked, "lpt",
        b"lpt,host=b n=2i 1704067201000000000\n"
        b"lpt,host=c n=2.5 1704067202000000000\n"
        b"lpt,host=d ok=\"yes\" 1704067203000000000\n"
        b"lpt,host=e x=3i 1704067204000000000\n"
        b"lpt,host=f n=4i,ok=f,x=4 1704067205000000000\n",
        "3 lines rejected, 2 written",
        [
            'line 2: column "n" of table "lpt" is bigint, but this value is double',
            'line 3: column "ok" of table "lpt" is boolean, but this value is text',
            'line 4: column "x" of table "lpt" is double, but this value is bigint',
        ],
        written=2,
    )
    assert query(small, "SELECT host, n FROM lpt ORDER BY time") == [("a", 1), ("b", 2), ("f", 4)]


@pytest.mark.parametrize("path", LP_PATHS)
def test_line_protocol_type_conflict_with_sql_created_table(small, path):
    """A table declared in SQL: lines conflicting with its types are
    rejected alone; lines that fit (a tag into a TEXT column) are written."""
    acked = Acked(small)
    with psycopg.connect(small.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE typed (time TIMESTAMP NOT NULL, host TEXT, n BIGINT, ok BOOLEAN)")
        conn.execute("INSERT INTO typed VALUES ('2024-01-01T00:00:00Z', 'sql', 1, true)")
    acked.add("typed", 1)
    post_type_conflicts(
        small, path, acked, "typed",
        b"typed,host=a n=2i 1704067201000000000\n"
        b"typed,host=b n=2.5 1704067202000000000\n"
        b"typed,host=c ok=\"yes\" 1704067203000000000\n"
        b"typed,host=d n=3i,ok=f 1704067204000000000\n",
        "2 lines rejected, 2 written",
        [
            'line 2: column "n" of table "typed" is bigint, but this value is double',
            'line 3: column "ok" of table "typed" is boolean, but this value is text',
        ],
        written=2,
    )
    assert query(small, "SELECT host, n FROM typed ORDER BY time") == [("sql", 1), ("a", 2), ("d", 3)]


def json_cases():
    big = b"".join(b'{"svc": "s%d", "pad": "%s"}\n' % (i, b"x" * 100) for i in range(700))
    return {
        "unknown_precision": ("?precision=fortnight", {}, b'{"v": 1}', 400, ['unknown precision "fortnight"']),
        "content_encoding_br": ("", {"Content-Encoding": "br"}, b'{"v": 1}', 415, ['Content-Encoding "br"']),
        "invalid_gzip": ("", {"Content-Encoding": "gzip"}, b'{"v": 1}', 400, ["not valid gzip"]),
        "body_past_limit": ("", {}, big, 413, ["larger than 65536 bytes", "--max-body-size"]),
        "gzip_bomb": (
            "", {"Content-Encoding": "gzip"}, gz(b'{"v": 1, "pad": "' + b"y" * (8 << 20) + b'"}'), 413,
            ["gzip body expands past 65536 bytes"],
        ),
        "invalid_utf8": ("", {}, b'{"svc": "\xff\xfe"}\n', 400, ["not UTF-8"]),
        "invalid_json_ndjson": ("", {}, b'{"svc": "a"\n', 400, ["line 1: invalid JSON"]),
    }


JSON_CASES = list(json_cases())


@pytest.mark.parametrize("case", JSON_CASES)
def test_json_refuses_bad_request(small, case):
    suffix, headers, body, status, substrings = json_cases()[case]
    acked = Acked(small)
    seed_line_protocol(small, acked)
    st, _, resp = small.post("/v1/ingest/events", b'{"time": "2024-01-01T00:00:00Z", "svc": "seed"}', {})
    assert st == 200, (st, resp)
    acked.add("events", 1)
    got = small.post("/v1/ingest/events" + suffix, body, headers)
    assert_json_error(*got, status, *substrings)
    acked.check(f"JSON {case}")


def test_json_type_conflict_names_column_and_types(small):
    acked = Acked(small)
    st, _, resp = small.post("/v1/ingest/events", b'{"time": 1, "n": 1, "flag": true}', {})
    assert st == 200, (st, resp)
    acked.add("events", 1)
    st, headers, resp = small.post(
        "/v1/ingest/events",
        b'{"time": 2, "n": "two"}\n{"time": 3, "n": 3}\n{"time": 4, "flag": 1.5}\n',
        {},
    )
    msg = assert_json_error(st, headers, resp, 400, "2 lines rejected, 1 written")
    assert 'line 1: column "n" of table "events" is bigint, but this value is text' in msg, msg
    assert 'line 3: column "flag" of table "events" is boolean, but this value is double' in msg, msg
    acked.add("events", 1)
    acked.check("JSON type conflicts")


def test_json_into_table_declared_in_sql(small):
    """JSON into a table created with SQL: a string fits its TEXT column, a
    string for its BIGINT column is rejected naming both types."""
    acked = Acked(small)
    with psycopg.connect(small.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE jsql (time TIMESTAMP NOT NULL, svc TEXT, n BIGINT)")
    acked.add("jsql", 0)
    st, headers, resp = small.post(
        "/v1/ingest/jsql", b'{"time": 1, "svc": "a", "n": 1}\n{"time": 2, "svc": "b", "n": "x"}\n', {})
    msg = assert_json_error(st, headers, resp, 400, "1 line rejected, 1 written")
    assert 'line 2: column "n" of table "jsql" is bigint, but this value is text' in msg, msg
    acked.add("jsql", 1)
    acked.check("JSON into a SQL table")


def test_wrong_method_and_unknown_path(small):
    """Errors are JSON {"error": ...} (README, "Writing over HTTP"), also
    for an unknown path and a GET on a POST endpoint."""
    acked = Acked(small)
    seed_line_protocol(small, acked)
    assert_json_error(*small.post("/v1/nothing", b"x", {}), 404, "no endpoint at /v1/nothing")
    for path in ["/v1/traces", "/v1/logs", "/v1/metrics", "/api/v1/write", "/api/v2/write", "/write",
                 "/v1/ingest/t"]:
        req = urllib.request.Request(small.http_url + path, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                got = (r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            got = (e.code, e.headers, e.read())
        assert got[0] == 405, (path, got[0], got[2])
        assert got[1].get("Allow") == "POST", (path, dict(got[1]))
        assert_json_error(*got, 405, "POST")
    acked.check("wrong methods")


def test_json_bad_table_name(small):
    acked = Acked(small)
    seed_line_protocol(small, acked)
    got = small.post("/v1/ingest/" + "t" * 129, b'{"v": 1}', {})
    assert_json_error(*got, 400, "is not a table name")
    acked.check("a JSON write to a bad table name")


# ---------------------------------------------------------------------------
# Backpressure: persistence fails, the buffer fills, writers are refused
# with retryable errors; once persistence works again nothing acknowledged
# is missing.


def server_that_cannot_persist(start_server, tmp_path, backpressure_timeout):
    """A server with a 1 MiB write buffer whose persistence cannot write a
    single file (its object directory is a regular file: `objects`, which
    the caller turns back into a directory to let it persist again).
    Catalog snapshots are off: the first one is written in the background
    just after start-up and would re-create the directory under the test."""
    objects = tmp_path / "objects"
    server = start_server(
        "--buffer-limit", "1MiB", "--backpressure-timeout", backpressure_timeout, "--persist-interval", "1h",
        "--object-store", f"file://{objects}", "--catalog-snapshot-interval", "0s",
    )
    if objects.exists():
        shutil.rmtree(objects)
    objects.write_bytes(b"not a directory")
    return server, objects


def test_backpressure_refuses_with_retry_and_loses_nothing(start_server, tmp_path):
    server, objects = server_that_cannot_persist(start_server, tmp_path, "1s")
    acked = Acked(server)

    # Fill the buffer with line protocol until it refuses.
    full = None
    n = 0
    for request in range(400):
        lines = b"".join(
            b"bp,host=h%d,region=r%d v=%d.5,i=%di,s=\"%s\" %d\n" % (n + k, k % 7, n + k, n + k, b"z" * 40, T0 + n + k)
            for k in range(2000)
        )
        status, headers, body = server.post("/api/v2/write", lines, {})
        if status == 204:
            n += 2000
            acked.add("bp", 2000)
            continue
        full = (status, headers, body)
        break
    assert full is not None, f"the buffer never filled after {n} rows" + log_tail(server)
    status, headers, body = full
    assert n > 0, "the very first write was refused"
    msg = assert_json_error(status, headers, body, 503, "write buffer is full", "retry")
    # As docs/ingest.md quotes it (with this server's figures, and here the
    # reason persistence is behind: this test breaks it).
    assert re.fullmatch(r"write buffer is full \(\d+ of \d+ bytes\) and persistence has not caught up"
                        r"( \(persistence is failing: .*\))?; the write was not applied, retry it", msg), msg
    # Writers have three quarters of --buffer-limit; the rest is kept for
    # what persistence and compaction hold while they work.
    assert re.match(r"write buffer is full \(\d+ of 786432 bytes\)", msg), msg
    assert headers.get("Retry-After") == "5", dict(headers)
    acked.check("a refused line protocol write")  # refused rows were not applied

    # Every other write path is refused too, retryably.
    status, headers, body = server.post("/write?db=x", b"bp,host=v1 v=1 1\n", {})
    assert_json_error(status, headers, body, 503, "write buffer is full")
    assert headers.get("Retry-After", "").isdigit(), dict(headers)

    status, headers, body = server.post("/v1/ingest/bp_json", b'{"v": 1}', {})
    assert_json_error(status, headers, body, 503, "write buffer is full")
    assert headers.get("Retry-After", "").isdigit(), dict(headers)

    rw = snappy(write_request(pb_series([("__name__", "bp_rw")], [(1.0, NOW_MS)])))
    status, headers, body = remote_write(server, rw)
    assert_json_error(status, headers, body, 503, "write buffer is full")
    assert headers.get("Retry-After", "").isdigit(), dict(headers)

    # The Status body says what OTLP/gRPC says (RESOURCE_EXHAUSTED with RetryInfo);
    # OTLP/HTTP clients retry on the 503 and its Retry-After.
    status, headers, body = otlp_post(server, "traces", good_request("traces").SerializeToString())
    st = assert_otlp_error(status, headers, body, 503, PROTOBUF, RESOURCE_EXHAUSTED, "write buffer is full")
    assert headers.get("Retry-After", "").isdigit(), dict(headers)
    retry = [d for d in st.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert retry, st

    status, headers, body = otlp_post(server, "logs", good_json("logs").replace(
        b'"resource"', b'"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}], "resource"'), JSON)
    assert_otlp_error(status, headers, body, 503, JSON, RESOURCE_EXHAUSTED, "write buffer is full")
    assert headers.get("Retry-After", "").isdigit(), dict(headers)

    resp, err = grpc_call(server, "metrics", good_request("metrics").SerializeToString())
    assert err is not None, "a gRPC export was accepted with the buffer full"
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.code(), err.details())
    assert "write buffer is full" in err.details(), err.details()
    details = status_details(err)
    assert details is not None, f"no grpc-status-details-bin in {err.trailing_metadata()}"
    retry = [d for d in details.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert retry, details
    info = error_details_pb2.RetryInfo()
    retry[0].Unpack(info)
    assert info.retry_delay.seconds > 0, info

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("INSERT INTO bp (time, host, v) VALUES (now(), 'pg', 1.0)")
        assert exc.value.sqlstate == "53000", (exc.value.sqlstate, str(exc.value))
        assert "write buffer is full" in str(exc.value), str(exc.value)

    acked.check("refused writes on every path")

    # Persistence works again: writes are accepted within 30 s.
    objects.unlink()
    objects.mkdir()
    deadline = time.time() + 30
    last = None
    while True:
        status, _, body = server.post("/api/v2/write", b"bp,host=after v=1 %d\n" % (T0 + 10**12), {})
        if status == 204:
            acked.add("bp", 1)
            break
        last = (status, body)
        assert status == 503, last
        assert time.time() < deadline, f"writes still refused 30 s after the store came back: {last}" + log_tail(
            server
        )
        time.sleep(0.5)
    acked.check("recovery")
    files = query(server, "SELECT count(*) FROM system.files WHERE table_name = 'bp'")[0][0]
    assert files > 0, "nothing was persisted after the store came back"
    for table in ("otel_traces", "otel_logs", "otel_metrics_gauge", "bp_rw", "bp_json"):
        exists = query(server, "SELECT count(*) FROM information_schema.tables WHERE table_name = %s", (table,))
        if exists[0][0]:
            assert query(server, f"SELECT count(*) FROM {table}") == [(0,)], table
    # A clean restart replays nothing twice and loses nothing.
    assert server.stop() == 0
    server.start()
    acked.check("restart after recovery")


def test_rows_older_than_retention_are_reported_in_every_protocol(server):
    """Rows older than their table's retention would never be visible: each
    protocol says they were dropped (InfluxDB's `partial write: points
    beyond retention policy dropped=N` for line protocol and NDJSON, a 400
    for remote write, partial_success for OTLP) and writes the others."""
    now_ns = time.time_ns()
    old_ns = now_ns - 3 * 86400 * 10**9
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE) WITH (retention = '1 day')")

    # Line protocol, both paths.
    for path in ["/api/v2/write?bucket=b", "/write?db=b"]:
        status, headers, resp = server.post(
            path, f"kept,host=old v=1 {old_ns}\nkept,host=new v=2 {now_ns}\n".encode(), {})
        assert_json_error(status, headers, resp, 400,
                          "partial write: points beyond retention policy dropped=1", "1 row written")
    # NDJSON.
    old_iso = dt.datetime.fromtimestamp(old_ns / 1e9, dt.timezone.utc).isoformat()
    new_iso = dt.datetime.fromtimestamp(now_ns / 1e9, dt.timezone.utc).isoformat()
    body = (json.dumps({"time": old_iso, "host": "old", "v": 3}) + "\n"
            + json.dumps({"time": new_iso, "host": "json", "v": 4}) + "\n").encode()
    status, headers, resp = server.post("/v1/ingest/kept", body, {"Content-Type": "application/x-ndjson"})
    assert_json_error(status, headers, resp, 400, "points beyond retention policy dropped=1")
    assert query(server, "SELECT host, count(*) FROM kept GROUP BY host ORDER BY host") == [
        ("json", 1), ("new", 2)]

    # Remote write: a metric table given a retention.
    now_ms = now_ns // 10**6
    status, _, resp = remote_write(server, snappy(write_request(
        pb_series([("__name__", "rw_kept"), ("job", "a")], [(1.0, now_ms)]))))
    assert status == 204, (status, resp)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("ALTER TABLE rw_kept SET (retention = '1 day')")
    status, headers, resp = remote_write(server, snappy(write_request(
        pb_series([("__name__", "rw_kept"), ("job", "a")], [(2.0, old_ns // 10**6), (3.0, now_ms + 1000)]))))
    assert_json_error(status, headers, resp, 400,
                      "partial write: points beyond retention policy dropped=1", "1 sample written")
    assert query(server, "SELECT count(*) FROM rw_kept") == [(2,)]

    # OTLP: otel_logs given a retention.
    status, _, resp = otlp_post(server, "logs", logs_request([make_log("first", t=now_ns)]).SerializeToString())
    assert status == 200, (status, resp)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("ALTER TABLE otel_logs SET (retention = '1 day')")
    status, _, resp = otlp_post(server, "logs", logs_request(
        [make_log("too old", t=old_ns), make_log("fresh", t=now_ns)]).SerializeToString())
    assert status == 200, (status, resp)
    partial = ExportLogsServiceResponse.FromString(resp).partial_success
    assert partial.rejected_log_records == 1, partial
    assert "points beyond retention policy dropped=1" in partial.error_message, partial
    assert query(server, "SELECT body FROM otel_logs ORDER BY time") == [("first",), ("fresh",)]
    assert server.proc.poll() is None


# ---------------------------------------------------------------------------
# Shutdown: writers waiting for buffer space are refused at once, with the
# retryable "shutting down" answer docs/ingest.md and docs/flight-sql.md
# describe (HTTP 503 + Retry-After, OTLP UNAVAILABLE, gRPC UNAVAILABLE +
# RetryInfo, SQLSTATE 57P01, Flight UNAVAILABLE); the server does not wait
# out their backpressure timeout, and nothing acknowledged is lost.

UNAVAILABLE = 14


def test_shutdown_refuses_waiting_writers_as_unavailable(start_server, tmp_path):
    import threading

    import adbc_driver_flightsql.dbapi as flight_sql
    import pyarrow as pa

    server, objects = server_that_cannot_persist(start_server, tmp_path, "120s")
    acked = Acked(server)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE sd (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE PRECISION)")
    lines = b"".join(b"sd,host=h%d v=%d.5 %d\n" % (k, k, T0 + k) for k in range(30000))
    status, _, body = server.post("/api/v2/write", lines, {})
    assert status == 204, (status, body)
    acked.add("sd", 30000)
    buffered = query(server, "SELECT buffered_bytes FROM system.tables WHERE table_name = 'sd'")[0][0]
    assert buffered >= 1024 * 1024, f"only {buffered} bytes buffered: the buffer is not full"

    # Every path's writer now waits for buffer space.
    answers = {}

    def line_protocol():
        answers["line protocol"] = server.post("/api/v2/write", b"sd,host=lp v=1 %d\n" % (T0 + 10**12), {})

    def otlp_http():
        answers["OTLP/HTTP"] = otlp_post(server, "traces", good_request("traces").SerializeToString())

    def otlp_grpc():
        answers["OTLP/gRPC"] = grpc_call(server, "metrics", good_request("metrics").SerializeToString())

    def pgwire():
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as conn:
                conn.execute("INSERT INTO sd (time, host, v) VALUES (now(), 'pg', 1.0)")
            answers["pgwire"] = None
        except psycopg.Error as e:
            answers["pgwire"] = e

    def flight():
        host, port = server.addrs["flight"].rsplit(":", 1)
        table = pa.table({"time": pa.array([T0], pa.timestamp("ns")), "host": ["flight"], "v": [1.0]})
        try:
            with flight_sql.connect(f"grpc://{host}:{port}") as conn, conn.cursor() as cur:
                cur.adbc_ingest("sd", table, mode="append")
            answers["Flight SQL"] = None
        except flight_sql.Error as e:
            answers["Flight SQL"] = e

    threads = [threading.Thread(target=f) for f in (line_protocol, otlp_http, otlp_grpc, pgwire, flight)]
    for t in threads:
        t.start()
    time.sleep(2)
    assert answers == {}, f"writes answered while the buffer is full: {answers}"

    stopped = time.time()
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), f"writers still waiting 20 s after SIGTERM: {answers}"
    assert server.proc.wait(timeout=20) == 0, log_tail(server)
    assert time.time() - stopped < 20, "the shutdown waited for the writers' backpressure timeout"

    status, headers, body = answers["line protocol"]
    assert_json_error(status, headers, body, 503, "the server is shutting down")
    assert headers.get("Retry-After") == "5", dict(headers)

    status, headers, body = answers["OTLP/HTTP"]
    st = assert_otlp_error(status, headers, body, 503, PROTOBUF, UNAVAILABLE, "the server is shutting down")
    assert headers.get("Retry-After") == "5", dict(headers)
    assert [d for d in st.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)], st

    resp, err = answers["OTLP/gRPC"]
    assert err is not None, "a gRPC export was accepted while the server shut down"
    assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
    assert "the server is shutting down" in err.details(), err.details()
    details = status_details(err)
    assert details is not None and [d for d in details.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)], details

    err = answers["pgwire"]
    assert isinstance(err, psycopg.Error), f"the INSERT was not refused: {err!r}"
    assert err.sqlstate == "57P01" and "the server is shutting down" in str(err), (err.sqlstate, str(err))

    err = answers["Flight SQL"]
    assert isinstance(err, flight_sql.Error), f"the ingest was not refused: {err!r}"
    assert "the server is shutting down" in str(err) and "Unavailable" in str(err), str(err)

    # Nothing refused was written, nothing acknowledged lost.
    objects.unlink()
    objects.mkdir()
    server.start()
    acked.check("a shutdown that refused waiting writers")
