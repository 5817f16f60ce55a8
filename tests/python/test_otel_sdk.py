"""The OpenTelemetry Python SDK exporting to sextant over OTLP gRPC and
OTLP/HTTP (protobuf), OTLP/HTTP JSON sent by hand, and bad OTLP bodies; what
arrived is read back over pgwire with psycopg.

Every export goes through a recording wrapper around the real OTLP exporter,
because the SDK's processors and metric readers swallow export failures: a
test fails when any export did not return SUCCESS, not only when rows are
missing afterwards.
"""

import datetime as dt
import json
import math
import re
import time
import uuid

import psycopg
import pytest
import grpc
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as grpc_metrics
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
EXPORT_TIMEOUT_S = 10


def ns_sql(col: str) -> str:
    """SQL for the exact nanoseconds since the epoch of a timestamp column
    (pgwire text and psycopg stop at microseconds). Whole seconds from
    to_unixtime, the fraction from extract(nanosecond), which counts from the
    start of the minute; sqllogictest/slt/types_timestamp.slt checks both."""
    return (
        f"CAST(to_unixtime({col}) AS BIGINT) * 1000000000"
        f" + CAST(extract(nanosecond FROM {col}) AS BIGINT) %% 1000000000"
    )


def micros(ns: int) -> dt.datetime:
    """The datetime psycopg gets for a nanosecond timestamp: pgwire text
    truncates to the microsecond."""
    return EPOCH + dt.timedelta(microseconds=ns // 1000)


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC string with up to 9
    fraction digits (the `time` of an event in otel_traces.events)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(?:Z|\+00:00)", text)
    assert m, f"not an RFC 3339 UTC timestamp: {text!r}"
    whole = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
    seconds = (whole - EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def log_tail(server, n=4000) -> str:
    return "\n--- server log (tail) ---\n" + server.log()[-n:]


# ---------------------------------------------------------------------------
# Exporters that remember what the real exporter answered.


class RecordingSpanExporter(SpanExporter):
    def __init__(self, inner):
        self.inner = inner
        self.results = []  # (items, SpanExportResult or the exception's repr)

    def export(self, spans):
        try:
            result = self.inner.export(spans)
        except Exception as e:  # the processor would swallow it
            self.results.append((len(spans), repr(e)))
            raise
        self.results.append((len(spans), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


class RecordingLogExporter(LogRecordExporter):
    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, batch):
        try:
            result = self.inner.export(batch)
        except Exception as e:
            self.results.append((len(batch), repr(e)))
            raise
        self.results.append((len(batch), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


class RecordingMetricExporter(MetricExporter):
    def __init__(self, inner):
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.results = []

    @staticmethod
    def points(metrics_data) -> int:
        return sum(
            len(m.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        n = self.points(metrics_data)
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception as e:
            self.results.append((n, repr(e)))
            raise
        self.results.append((n, result))
        return result

    def force_flush(self, timeout_millis=10_000):
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self.inner.shutdown()


def assert_exported(server, recorder, success, items, what):
    assert recorder.results, f"no {what} were exported at all" + log_tail(server)
    failed = [r for r in recorder.results if r[1] is not success]
    assert not failed, f"{what} export failed: {failed}" + log_tail(server)
    assert sum(n for n, _ in recorder.results) == items, (
        f"expected {items} {what} exported, got {recorder.results}"
    )


CUMULATIVE = {Counter: AggregationTemporality.CUMULATIVE}


def make_exporters(server, transport):
    """The SDK's exporters for `transport`: "grpc" or "http", optionally
    "-gzip" (request bodies gzip-compressed by the exporter)."""
    kind, _, compression = transport.partition("-")
    if kind == "grpc":
        kw = dict(endpoint=server.grpc_endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
        if compression == "gzip":
            kw["compression"] = grpc.Compression.Gzip
        return (
            grpc_traces.OTLPSpanExporter(**kw),
            grpc_logs.OTLPLogExporter(**kw),
            grpc_metrics.OTLPMetricExporter(preferred_temporality=CUMULATIVE, **kw),
        )
    assert kind == "http"
    base = server.http_url
    kw = dict(timeout=EXPORT_TIMEOUT_S)
    if compression == "gzip":
        kw["compression"] = HttpCompression.Gzip
    return (
        http_traces.OTLPSpanExporter(endpoint=f"{base}/v1/traces", **kw),
        http_logs.OTLPLogExporter(endpoint=f"{base}/v1/logs", **kw),
        http_metrics.OTLPMetricExporter(
            endpoint=f"{base}/v1/metrics", preferred_temporality=CUMULATIVE, **kw
        ),
    )


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["grpc", "grpc-gzip", "http", "http-gzip"])
def test_sdk_exports_traces_logs_metrics(server, transport):
    service = f"checkout-{transport}-{uuid.uuid4().hex[:8]}"
    resource = Resource.create({"service.name": service, "deployment.environment": "pytest"})
    span_exporter, log_exporter, metric_exporter = make_exporters(server, transport)
    spans_out = RecordingSpanExporter(span_exporter)
    logs_out = RecordingLogExporter(log_exporter)
    metrics_out = RecordingMetricExporter(metric_exporter)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_out))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    # No periodic export: the explicit force_flush below is the one export.
    reader = PeriodicExportingMetricReader(metrics_out, export_interval_millis=math.inf)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])

    tracer = tracer_provider.get_tracer("sextant.tests.tracer", "1.2.3")
    otel_logger = logger_provider.get_logger("sextant.tests.logger", "4.5.6")
    meter = meter_provider.get_meter("sextant.tests.meter", "7.8.9")

    log_time_ns = time.time_ns()
    child_attributes = {
        "payment.provider": "acme",
        "retries": 3,
        "amount": 12.5,
        "card.present": True,
        "request.bytes": 2**53 + 1,  # not exact as a double: must stay an integer
        "tags": ["fraud-check", "3ds"],
    }
    try:
        with tracer.start_as_current_span(
            "GET /checkout", kind=SpanKind.SERVER, attributes={"http.route": "/checkout"}
        ) as parent:
            with tracer.start_as_current_span("charge card") as child:
                child.set_attributes(child_attributes)
                child.add_event("retrying", {"attempt": 2})
                # Emitted inside the child's context: carries its trace and span id.
                otel_logger.emit(
                    timestamp=log_time_ns,
                    severity_number=SeverityNumber.WARN,
                    severity_text="WARN",
                    body="card declined, retrying",
                    attributes={"user.id": "u-42"},
                )
                child.set_status(Status(StatusCode.ERROR, "card declined"))

        requests = meter.create_counter("requests", unit="1", description="handled requests")
        for _ in range(3):
            requests.add(1, {"route": "/a"})
        for _ in range(2):
            requests.add(1, {"route": "/b"})

        assert tracer_provider.force_flush()
        assert logger_provider.force_flush()
        assert meter_provider.force_flush()
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()
        meter_provider.shutdown()

    assert_exported(server, spans_out, SpanExportResult.SUCCESS, 2, "spans")
    assert_exported(server, logs_out, LogRecordExportResult.SUCCESS, 1, "log records")
    assert_exported(server, metrics_out, MetricExportResult.SUCCESS, 2, "metric points")

    parent_ctx, child_ctx = parent.get_span_context(), child.get_span_context()
    trace_id = format(parent_ctx.trace_id, "032x")
    parent_id = format(parent_ctx.span_id, "016x")
    child_id = format(child_ctx.span_id, "016x")
    assert format(child_ctx.trace_id, "032x") == trace_id

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        # ---- otel_traces
        rows = conn.execute(
            "SELECT span_id, trace_id, parent_span_id, name, kind, status_code, status_message,"
            " time, end_time, duration_ns, " + ns_sql("time") + ", " + ns_sql("end_time") + ","
            " scope_name, scope_version,"
            " json_get_str(resource_attributes, 'deployment.environment')"
            " FROM otel_traces WHERE service_name = %s ORDER BY time",
            (service,),
        ).fetchall()
        assert len(rows) == 2, rows
        spans = {r[0]: r[1:] for r in rows}
        assert set(spans) == {parent_id, child_id}, (rows, parent_id, child_id)
        for span_id, sdk_span, kind, parent_span_id in [
            (parent_id, parent, "server", None),
            (child_id, child, "internal", parent_id),
        ]:
            (tid, pid, name, got_kind, _, _, start, end, duration, start_ns, end_ns,
             scope_name, scope_version, env) = spans[span_id]
            assert tid == trace_id
            # A root span has no parent: NULL or empty text, never a made-up id.
            assert (pid or None) == parent_span_id, (span_id, pid)
            assert name == sdk_span.name
            assert got_kind == kind
            assert duration == sdk_span.end_time - sdk_span.start_time
            assert start == micros(sdk_span.start_time), (start, sdk_span.start_time)
            assert end == micros(sdk_span.end_time), (end, sdk_span.end_time)
            assert (start_ns, end_ns) == (sdk_span.start_time, sdk_span.end_time)
            assert (scope_name, scope_version) == ("sextant.tests.tracer", "1.2.3")
            assert env == "pytest"

        assert spans[parent_id][4] == "unset" and not spans[parent_id][5], spans[parent_id]
        assert spans[child_id][4:6] == ("error", "card declined")

        route = conn.execute(
            "SELECT json_get_str(attributes, 'http.route') FROM otel_traces WHERE span_id = %s",
            (parent_id,),
        ).fetchone()[0]
        assert route == "/checkout"

        (provider, retries, amount, present, big, attributes, events) = conn.execute(
            "SELECT json_get_str(attributes, 'payment.provider'), json_get_int(attributes, 'retries'),"
            " json_get_float(attributes, 'amount'), json_get_bool(attributes, 'card.present'),"
            " json_get_int(attributes, 'request.bytes'), attributes, events"
            " FROM otel_traces WHERE span_id = %s",
            (child_id,),
        ).fetchone()
        assert (provider, retries, amount, present, big) == ("acme", 3, 12.5, True, 2**53 + 1)
        assert json.loads(attributes) == child_attributes
        events = json.loads(events)
        assert isinstance(events, list) and len(events) == 1, events
        (sdk_event,) = child.events
        assert events[0]["name"] == "retrying"
        assert events[0]["attributes"] == {"attempt": 2}
        assert rfc3339_ns(events[0]["time"]) == sdk_event.timestamp, (events[0], sdk_event.timestamp)
        assert events[0].get("dropped_attributes_count", 0) == 0

        # ---- otel_logs
        rows = conn.execute(
            "SELECT body, trace_id, span_id, severity_number, severity_text, service_name,"
            " json_get_str(attributes, 'user.id'), time, " + ns_sql("time") + ","
            " observed_time, scope_name, scope_version"
            " FROM otel_logs WHERE service_name = %s",
            (service,),
        ).fetchall()
        assert len(rows) == 1, rows
        (body, tid, sid, sev_num, sev_text, svc, user, t, t_ns, observed, scope_name, scope_version) = rows[0]
        assert body == "card declined, retrying"
        assert (tid, sid) == (trace_id, child_id)
        assert (sev_num, sev_text) == (13, "WARN")  # SeverityNumber.WARN
        assert svc == service
        assert user == "u-42"
        assert t == micros(log_time_ns)
        assert t_ns == log_time_ns
        assert observed is not None and observed >= t
        assert (scope_name, scope_version) == ("sextant.tests.logger", "4.5.6")

        # ---- otel_metrics_sum
        rows = conn.execute(
            "SELECT json_get_str(attributes, 'route'), value, value_int, is_monotonic,"
            " aggregation_temporality, metric_unit, metric_description, time, start_time, scope_name"
            " FROM otel_metrics_sum WHERE metric_name = 'requests' AND service_name = %s ORDER BY time",
            (service,),
        ).fetchall()
        assert rows, "no otel_metrics_sum rows for requests"
        latest = {r[0]: r for r in rows}  # ordered by time: the last one wins
        assert set(latest) == {"/a", "/b"}, rows
        for route, expected in [("/a", 3), ("/b", 2)]:
            (_, value, value_int, monotonic, temporality, unit, description, t, start, scope) = latest[route]
            assert value == float(expected), latest[route]
            # The SDK sends an integer counter as as_int points.
            assert value_int == expected, latest[route]
            assert monotonic is True
            assert temporality == "cumulative"
            assert (unit, description) == ("1", "handled requests")
            assert start is not None and start <= t
            assert scope == "sextant.tests.meter"


def test_otlp_http_rejects_bad_bodies(server):
    status, _, body = server.post("/v1/traces", b"not protobuf", {"Content-Type": "application/x-protobuf"})
    assert status == 400, (status, body)
    status, _, body = server.post("/v1/traces", b"{", {"Content-Type": "application/json"})
    assert status == 400, (status, body)
    status, _, body = server.post("/v1/traces", b"hello", {"Content-Type": "text/plain"})
    assert status == 415, (status, body)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_otlp_http_json_log_keeps_nanoseconds(server):
    service = f"json-{uuid.uuid4().hex[:8]}"
    t_ns = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
    observed_ns = t_ns + 100_000_001
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    # The OTLP JSON mapping: lowerCamelCase keys, hex ids, 64-bit integers
    # (timestamps, intValue) as strings, enums as numbers.
    payload = {
        "resourceLogs": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": service}},
                {"key": "host.name", "value": {"stringValue": "web-1"}},
            ]},
            "scopeLogs": [{
                "scope": {"name": "json-client", "version": "0.1"},
                "logRecords": [{
                    "timeUnixNano": str(t_ns),
                    "observedTimeUnixNano": str(observed_ns),
                    "severityNumber": 17,
                    "severityText": "ERROR",
                    "body": {"stringValue": "disk full"},
                    "attributes": [
                        {"key": "disk", "value": {"stringValue": "/dev/sda1"}},
                        {"key": "free.bytes", "value": {"intValue": "1024"}},
                        {"key": "ratio", "value": {"doubleValue": 0.25}},
                        {"key": "mounted", "value": {"boolValue": True}},
                    ],
                    "traceId": trace_id,
                    "spanId": span_id,
                }],
            }],
        }],
    }
    status, headers, body = server.post(
        "/v1/logs", json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), dict(headers)
    answer = json.loads(body)
    assert isinstance(answer, dict), answer
    rejected = answer.get("partialSuccess", {}).get("rejectedLogRecords", 0)
    assert int(rejected) == 0, answer

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT time, " + ns_sql("time") + ", " + ns_sql("observed_time") + ","
            " body, severity_number, severity_text, trace_id, span_id,"
            " json_get_str(attributes, 'disk'), json_get_int(attributes, 'free.bytes'),"
            " json_get_float(attributes, 'ratio'), json_get_bool(attributes, 'mounted'),"
            " json_get_str(resource_attributes, 'host.name'), scope_name, scope_version"
            " FROM otel_logs WHERE service_name = %s",
            (service,),
        ).fetchall()
    assert len(rows) == 1, rows
    (t, got_ns, got_observed_ns, body, sev_num, sev_text, tid, sid, disk, free, ratio, mounted,
     host, scope_name, scope_version) = rows[0]
    # The time is checked twice: as the datetime psycopg parses (pgwire text
    # stops at microseconds, truncating) and exactly, in nanoseconds, computed
    # in SQL (see ns_sql), which is what proves the ...789 survived.
    assert t == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert got_ns == t_ns
    assert got_observed_ns == observed_ns
    assert (body, sev_num, sev_text) == ("disk full", 17, "ERROR")
    assert (tid, sid) == (trace_id, span_id)
    assert (disk, free, ratio, mounted) == ("/dev/sda1", 1024, 0.25, True)
    assert host == "web-1"
    assert (scope_name, scope_version) == ("json-client", "0.1")


# ---------------------------------------------------------------------------
# docs/ingest.md's "needs only the endpoint" (and README.md's line): each
# runs a service under `opentelemetry-instrument` (the SDK configured from
# the environment alone, as a user's service would be), with the document's
# variables and this server's addresses in place of 127.0.0.1:4317/4318.

SERVICE = """\
import logging
from opentelemetry import metrics, trace

with trace.get_tracer("my-service").start_as_current_span("checkout"):
    metrics.get_meter("my-service").create_counter("orders").add(3)
    logging.getLogger("my-service").warning("order placed")
"""


def endpoint_lines():
    """The `OTEL_... ./my-service` lines of docs/ingest.md (gRPC and
    HTTP) and README.md (HTTP), each once."""
    from test_docs_blocks import ROOT, code_blocks

    lines = []
    for doc in ("docs/ingest.md", "README.md"):
        found = [line for b in code_blocks((ROOT / doc).read_text(), "sh") for line in b.splitlines()
                 if line.startswith("OTEL_EXPORTER_OTLP_ENDPOINT=")]
        assert found and all(line.endswith(" ./my-service") for line in found), (doc, found)
        lines += [line for line in found if line not in lines]
    assert len(lines) == 2, lines
    return lines


@pytest.mark.parametrize("line", endpoint_lines())
def test_environment_of_ingest_md_is_all_an_sdk_needs(server, tmp_path, line):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(pair.split("=", 1) for pair in line.removesuffix(" ./my-service").split())
    assert set(env) == {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL"}, env
    host, port = server.grpc_endpoint.rsplit(":", 1)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        .replace("127.0.0.1:4317", server.grpc_endpoint)
        .replace("127.0.0.1:4318", server.addrs["http"])
    )
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith((server.grpc_endpoint, server.addrs["http"])), env
    service = f"my-service-{env['OTEL_EXPORTER_OTLP_PROTOCOL'].replace('/', '-')}"
    script = tmp_path / "my_service.py"
    script.write_text(SERVICE)
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    done = subprocess.run(
        [str(instrument), sys.executable, str(script)],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            **env,
            "OTEL_SERVICE_NAME": service,
            "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        },
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The SDK logs failed exports and goes on: nothing may have failed.
    assert "Failed to export" not in done.stderr and "Transient error" not in done.stderr, done.stderr
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        spans = conn.execute("SELECT name FROM otel_traces WHERE service_name = %s", (service,)).fetchall()
        logs = conn.execute("SELECT body, trace_id IS NOT NULL FROM otel_logs WHERE service_name = %s",
                            (service,)).fetchall()
        sums = conn.execute("SELECT metric_name, value_int FROM otel_metrics_sum WHERE service_name = %s",
                            (service,)).fetchall()
    assert spans == [("checkout",)], (spans, done.stderr)
    assert logs == [("order placed", True)], (logs, done.stderr)
    assert sums == [("orders", 3)], (sums, done.stderr)
