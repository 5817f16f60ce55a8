"""The example queries of docs/otel-schema.md and docs/ingest.md, run for real.

A small deterministic data set goes in over OTLP/HTTP JSON (hand-written
export requests, as curl would send them): two services, five traces (one
crossing both services, with errors), logs linked to that trace, a
cumulative counter with two series, a delta histogram with two points, and
one gauge, exponential histogram and summary point so that every otel_*
table exists. A Prometheus remote-write request (snappy and protobuf encoded
by hand in remote_write.py) writes two metric tables for the PromQL examples
of docs/ingest.md.

Every ```sql block of the two documents that starts with a marker comment
`-- example: NAME` is extracted from the markdown and run over pgwire with
psycopg; its rows must be `expected(base)[NAME]`. A marked block without an expected
result, or an expected result without a block, fails the test, so the
documents and this file cannot drift apart. A second test checks the
column tables of docs/otel-schema.md (names, order, types) against the real
tables.
"""

import datetime as dt
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from remote_write import STALE_NAN, pb_series, snappy, write_request

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "otel-schema.md", ROOT / "docs" / "ingest.md"]

MS = 1_000_000
SEC = 1_000 * MS

# The trace that crosses both services (the example queries name it).
TRACE = "5b8efff798038103d269b633813fc60c"


def s(v):
    return {"stringValue": v}


def i(v):
    return {"intValue": str(v)}


def attrs(**kv):
    """OTLP JSON attributes; keys use "__" for "." (http__route → http.route)."""
    out = []
    for k, v in kv.items():
        key = k.replace("__", ".")
        if isinstance(v, bool):
            val = {"boolValue": v}
        elif isinstance(v, int):
            val = i(v)
        elif isinstance(v, float):
            val = {"doubleValue": v}
        else:
            val = s(v)
        out.append({"key": key, "value": val})
    return out


@dataclass
class Dataset:
    base_ns: int
    requests: list = field(default_factory=list)


def dataset(base_ns=None) -> Dataset:
    """The OTLP/HTTP JSON requests of the data set. `base_ns` (default: 30
    minutes ago, floored to the minute) is the start of trace 1; every
    timestamp is an offset from it, so "the last hour" holds all of it."""
    if base_ns is None:
        minute = 60 * SEC
        base_ns = (time.time_ns() - 30 * minute) // minute * minute
    d = Dataset(base_ns)

    def t(offset_ns):
        return str(base_ns + offset_ns)

    frontend = {"attributes": attrs(service__name="frontend", service__version="1.4.0")}
    checkout = {"attributes": attrs(service__name="checkout", host__name="checkout-1")}
    scope = {"name": "docs-example", "version": "1.0"}

    def span(trace, span_id, parent, name, kind, start_ms, dur_ms, status=None, events=(), **a):
        out = {
            "traceId": trace,
            "spanId": span_id,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": t(start_ms * MS),
            "endTimeUnixNano": t((start_ms + dur_ms) * MS),
            "attributes": attrs(**a),
        }
        if parent:
            out["parentSpanId"] = parent
        if status:
            out["status"] = status
        if events:
            out["events"] = list(events)
        return out

    server, client = 2, 3
    err = lambda m: {"code": 2, "message": m}  # noqa: E731
    ok = {"code": 1}
    d.requests.append(("/v1/traces", {"resourceSpans": [
        {"resource": frontend, "scopeSpans": [{"scope": scope, "spans": [
            span(TRACE, "1000000000000001", None, "GET /checkout", server, 0, 300,
                 err("upstream failed"), http__route="/checkout", http__response__status_code=502),
            span("a1b2c3d4e5f60718293a4b5c6d7e8f90", "1000000000000005", None, "GET /", server,
                 1000, 30, ok, http__route="/", http__response__status_code=200),
            span("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "1000000000000006", None, "GET /products",
                 server, 2000, 80, http__route="/products", http__response__status_code=200),
            span("22222222222222222222222222222222", "1000000000000008", None, "GET /products",
                 server, 3000, 120, http__route="/products", http__response__status_code=200),
        ]}]},
        {"resource": checkout, "scopeSpans": [{"scope": scope, "spans": [
            span(TRACE, "2000000000000002", "1000000000000001", "POST /checkout", server, 10, 250,
                 err("payment failed"), http__route="/checkout", http__response__status_code=500),
            span(TRACE, "2000000000000003", "2000000000000002", "charge card", client, 20, 200,
                 err("card declined"),
                 events=[{"timeUnixNano": t(215 * MS), "name": "exception",
                          "attributes": attrs(exception__type="CardDeclined")}],
                 peer__service="payments"),
            span(TRACE, "2000000000000004", "2000000000000002", "SELECT orders", client, 230, 20,
                 db__system="postgresql"),
            span("11111111111111111111111111111111", "2000000000000007", None, "GET /cart", server,
                 4000, 40, http__route="/cart", http__response__status_code=200),
        ]}]},
    ]}))

    def log(offset_ms, sev, text, body, trace=None, span_id=None, observed_only=False, **a):
        out = {"severityNumber": sev, "severityText": text, "body": body, "attributes": attrs(**a)}
        if observed_only:
            out["observedTimeUnixNano"] = t(offset_ms * MS)
        else:
            out["timeUnixNano"] = t(offset_ms * MS)
        if trace:
            out["traceId"] = trace
            out["spanId"] = span_id
        return out

    d.requests.append(("/v1/logs", {"resourceLogs": [
        {"resource": checkout, "scopeLogs": [{"scope": scope, "logRecords": [
            log(12, 9, "INFO", s("order received"), TRACE, "2000000000000002", order__id=1001),
            log(215, 17, "ERROR", s("card declined"), TRACE, "2000000000000003",
                exception__type="CardDeclined"),
        ]}]},
        {"resource": frontend, "scopeLogs": [{"scope": scope, "logRecords": [
            log(301, 17, "ERROR", s("upstream /checkout returned 500"), TRACE, "1000000000000001"),
            log(3100, 13, "WARN", s("slow request"), http__route="/products"),
            log(5000, 9, "INFO",
                {"kvlistValue": {"values": attrs(event="cache warm", entries=42)}},
                observed_only=True),
        ]}]},
    ]}))

    def points(route, values):
        return [
            {"timeUnixNano": t(k * 15 * SEC), "startTimeUnixNano": t(-60 * SEC),
             "asInt": str(v), "attributes": attrs(http__route=route)}
            for k, v in enumerate(values)
        ]

    def hist_point(offset_s, counts, total, sum_):
        return {"timeUnixNano": t(offset_s * SEC), "startTimeUnixNano": t((offset_s - 60) * SEC),
                "count": str(total), "sum": sum_, "bucketCounts": [str(c) for c in counts],
                "explicitBounds": [0.05, 0.1, 0.25, 0.5, 1.0]}

    d.requests.append(("/v1/metrics", {"resourceMetrics": [
        {"resource": checkout, "scopeMetrics": [{"scope": scope, "metrics": [
            {"name": "http.server.request.count", "unit": "{request}",
             "description": "Requests served", "sum": {
                 "aggregationTemporality": 2, "isMonotonic": True,
                 "dataPoints": points("/checkout", [100, 104, 110, 112, 120, 130, 131, 140])
                 + points("/cart", [50, 50, 51, 55, 60, 60, 61, 70])}},
        ]}]},
        {"resource": frontend, "scopeMetrics": [{"scope": scope, "metrics": [
            {"name": "http.server.request.duration", "unit": "s", "histogram": {
                "aggregationTemporality": 1,
                "dataPoints": [hist_point(60, [20, 15, 10, 3, 2, 0], 50, 6.1),
                               hist_point(120, [20, 15, 10, 3, 1, 1], 50, 6.2)]}},
            # One point of each other kind, so that every otel_* table exists.
            {"name": "process.memory.usage", "unit": "By", "gauge": {"dataPoints": [
                {"timeUnixNano": t(0), "asInt": "52428800"}]}},
            {"name": "http.server.response.body.size", "unit": "By", "exponentialHistogram": {
                "aggregationTemporality": 2, "dataPoints": [
                    {"timeUnixNano": t(0), "count": "3", "sum": 700.0, "scale": 0,
                     "zeroCount": "0", "positive": {"offset": 7, "bucketCounts": ["1", "2"]}}]}},
            {"name": "rpc.duration", "unit": "ms", "summary": {"dataPoints": [
                {"timeUnixNano": t(0), "count": "4", "sum": 10.0,
                 "quantileValues": [{"quantile": 0.5, "value": 2.0},
                                    {"quantile": 0.99, "value": 4.5}]}]}},
        ]}]},
    ]}))
    return d


# ---------------------------------------------------------------------------
# Prometheus remote write (bodies built by tests/python/remote_write.py)


def remote_write_body(series) -> bytes:
    """`series`: [(labels dict, [(value, ts_ms), ...]), ...], `value` a float
    or ("bits", int); labels are encoded sorted by name."""
    return snappy(write_request(*(pb_series(sorted(labels.items()), samples) for labels, samples in series)))


def prometheus_series(now_ms: int):
    """Counters and `up` over the last ~4 minutes (17 samples 15 s apart,
    the last one 10 s ago), plus a staleness marker after the last sample of
    the web counter."""
    start = now_ms - 250_000
    ts = [start + k * 15_000 for k in range(17)]

    def counter(instance, job, code, first, step):
        labels = {"__name__": "http_requests_total", "job": job, "instance": instance, "code": code}
        return labels, [(float(first + step * k), t) for k, t in enumerate(ts)]

    web = counter("c:9100", "web", "200", 0, 6)
    web[1].append((("bits", STALE_NAN), start + 245_000))
    up = lambda instance, job, last: (  # noqa: E731
        {"__name__": "up", "job": job, "instance": instance},
        [(1.0, t) for t in ts[:-1]] + [(float(last), ts[-1])],
    )
    return [
        counter("a:9100", "api", "200", 1000, 30),
        counter("b:9100", "api", "200", 500, 15),
        counter("b:9100", "api", "500", 10, 3),
        web,
        up("a:9100", "api", 1),
        up("b:9100", "api", 0),
        up("c:9100", "web", 1),
    ]


# ---------------------------------------------------------------------------
# The documents' example queries

EXAMPLE = re.compile(r"```sql\n(-- example: (\S+)\n.*?)```", re.S)


def examples() -> dict:
    """NAME → SQL of every ```sql block starting with `-- example: NAME`."""
    found = {}
    for doc in DOCS:
        for m in EXAMPLE.finditer(doc.read_text()):
            sql, name = m.group(1), m.group(2)
            assert name not in found, f"example {name!r} appears twice"
            found[name] = sql
    return found


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def ts(ns: int) -> dt.datetime:
    """What psycopg reads for a timestamp of `ns` (pgwire text stops at µs)."""
    return EPOCH + dt.timedelta(microseconds=ns // 1000)


def rfc3339_ns(ns: int) -> str:
    return ts(ns - ns % SEC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % SEC:09d}Z"


def expected(base: int) -> dict:
    """The rows each example must return, for the data set at `base`."""
    def at(ms):
        return ts(base + ms * MS)

    minute0, minute1 = ts(base), ts(base + 60 * SEC)
    return {
        "attribute_functions": [
            ("GET /checkout", "/checkout", 502, "502", False, "1.4.0"),
            ("POST /checkout", "/checkout", 500, "500", False, None),
        ],
        "exception_events": [
            ("checkout", "charge card", rfc3339_ns(base + 215 * MS), "CardDeclined"),
        ],
        "errors_per_service_traces": [("checkout", 2), ("frontend", 1)],
        "errors_per_service_logs": [("checkout", 1), ("frontend", 1)],
        "p99_duration_per_service": [("checkout", 250.0, 4), ("frontend", 300.0, 4)],
        "trace_spans": [
            (at(0), 300.0, "frontend", "GET /checkout", "1000000000000001", None, "error"),
            (at(10), 250.0, "checkout", "POST /checkout", "2000000000000002", "1000000000000001", "error"),
            (at(20), 200.0, "checkout", "charge card", "2000000000000003", "2000000000000002", "error"),
            (at(230), 20.0, "checkout", "SELECT orders", "2000000000000004", "2000000000000002", "unset"),
        ],
        "trace_logs": [
            (at(12), "checkout", "INFO", "order received", "2000000000000002"),
            (at(215), "checkout", "ERROR", "card declined", "2000000000000003"),
            (at(301), "frontend", "ERROR", "upstream /checkout returned 500", "1000000000000001"),
        ],
        "trace_timeline": [
            (at(0), "span", "frontend", "GET /checkout (error)"),
            (at(10), "span", "checkout", "POST /checkout (error)"),
            (at(12), "log", "checkout", "INFO: order received"),
            (at(20), "span", "checkout", "charge card (error)"),
            (at(215), "log", "checkout", "ERROR: card declined"),
            (at(230), "span", "checkout", "SELECT orders (unset)"),
            (at(301), "log", "frontend", "ERROR: upstream /checkout returned 500"),
        ],
        "slowest_root_spans": [
            (at(0), "frontend", "GET /checkout", 300.0, "error", TRACE),
            (at(3000), "frontend", "GET /products", 120.0, "unset", "22222222222222222222222222222222"),
            (at(2000), "frontend", "GET /products", 80.0, "unset", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        ],
        "top_routes": [("/checkout", 2, 2), ("/products", 2, 0), ("/", 1, 0), ("/cart", 1, 0)],
        "counter_per_minute": [
            (minute0, "/cart", 5.0), (minute1, "/cart", 10.0),
            (minute0, "/checkout", 12.0), (minute1, "/checkout", 20.0),
        ],
        "counter_increase_per_minute": [
            (minute0, "/cart", 5.0), (minute1, "/cart", 15.0),
            (minute0, "/checkout", 12.0), (minute1, "/checkout", 28.0),
        ],
        # 40, 30, 20, 6, 3, 1 over the bounds 0.05, 0.1, 0.25, 0.5, 1: the 95th
        # of 100 is the 5th of the 6 values in (0.25, 0.5].
        "histogram_p95": [("frontend", 0.25 + 0.25 * 5 / 6)],
        "promql_up": [("api", "a:9100", 1.0), ("api", "b:9100", 0.0), ("web", "c:9100", 1.0)],
        "promql_down": [("api", "b:9100")],
        # Increases over the 16 steps of 15 s, divided by 300 s.
        "promql_rate": [
            ("api", "a:9100", "200", 480 / 300), ("api", "b:9100", "200", 240 / 300),
            ("api", "b:9100", "500", 48 / 300), ("web", "c:9100", "200", 96 / 300),
        ],
        "promql_sum_by": [("api", (480 + 240 + 48) / 300), ("web", 96 / 300)],
        "promql_topk": [("a:9100", 480 / 300), ("b:9100", (240 + 48) / 300)],
        "staleness_markers": [("web", "c:9100", 1)],
    }


def same(a, b) -> bool:
    if isinstance(b, float):
        return isinstance(a, float) and a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return type(a) is type(b) and a == b


def load(server) -> Dataset:
    d = dataset()
    for path, body in d.requests:
        status, headers, answer = server.post(
            path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        assert (status, json.loads(answer)) == (200, {}), (path, status, answer)
    body = remote_write_body(prometheus_series(time.time_ns() // MS))
    status, _, answer = server.post(
        "/api/v1/write", body,
        {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
         "X-Prometheus-Remote-Write-Version": "0.1.0"},
    )
    assert (status, answer) == (204, b""), answer
    return d


def test_every_documented_example_returns_the_documented_rows(server):
    d = load(server)
    docs = examples()
    want = expected(d.base_ns)
    assert sorted(docs) == sorted(want), (
        "examples in the docs without an expected result here, or the reverse: "
        f"{sorted(set(docs) ^ set(want))}"
    )
    failures = []
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for name, sql in docs.items():
            try:
                rows = [tuple(r) for r in conn.execute(sql).fetchall()]
            except psycopg.Error as e:
                failures.append(f"{name}: {type(e).__name__}: {e}\n{sql}")
                continue
            ok = len(rows) == len(want[name]) and all(
                len(r) == len(w) and all(same(a, b) for a, b in zip(r, w))
                for r, w in zip(rows, want[name])
            )
            if not ok:
                failures.append(f"{name}: got {rows}\n  expected {want[name]}")
    assert not failures, "\n\n".join(failures)



# The answer a document prints under an example is what psql prints for it
# (aligned, its defaults), the data set's times shifted to the document's.
OUTPUT = re.compile(r"```sql\n-- example: (\S+)\n(?:(?!```).)*```\n+```\n(.*?)```", re.S)
DOC_BASE = dt.datetime(2026, 11, 22, 7, 33, tzinfo=dt.timezone.utc)
PG_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)((?:\.\d+)?\+00)")


def documented_outputs() -> dict:
    """NAME → the output block right after example NAME's ```sql block."""
    return {m.group(1): m.group(2) for doc in DOCS for m in OUTPUT.finditer(doc.read_text())}


def psql_output(server, sql: str, base_ns: int) -> str:
    import shutil
    import subprocess

    binary = shutil.which("psql")
    assert binary, "psql is not installed (apt-get install postgresql-client)"
    host, port = server.pg
    out = subprocess.run(
        [binary, "-X", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port), "-U", "sextant", "-d", "sextant",
         "-c", sql],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, (sql, out.stdout, out.stderr)
    shift = ts(base_ns) - DOC_BASE

    def shifted(m):
        at = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc) - shift
        return at.strftime("%Y-%m-%d %H:%M:%S") + m.group(2)

    # The document drops the blanks psql pads a header line with, and its
    # row count footer.
    lines = [line.rstrip() for line in PG_TIME.sub(shifted, out.stdout).rstrip("\n").splitlines()]
    assert re.fullmatch(r"\(\d+ rows?\)", lines[-1]), out.stdout
    return "\n".join(lines[:-1]).rstrip("\n") + "\n"


def test_documented_outputs_are_what_psql_prints(server):
    d = load(server)
    docs, outputs = examples(), documented_outputs()
    assert len(outputs) >= 14, f"only {len(outputs)} example outputs found: {sorted(outputs)}"
    failures = []
    for name, printed in outputs.items():
        got = psql_output(server, docs[name], d.base_ns)
        if got != printed:
            failures.append(f"{name}: psql prints\n{got}the document shows\n{printed}")
    assert not failures, "\n".join(failures)

# ---------------------------------------------------------------------------
# The column tables of docs/otel-schema.md against the real tables

PG_TYPES = {
    "timestamptz": 1184, "bigint": 20, "integer": 23, "double precision": 701,
    "text": 25, "boolean": 16, "bigint[]": 1016, "double precision[]": 1022,
}
COLUMN_ROW = re.compile(r"^\| `(\w+)` \| ([a-z \[\]]+?)(?:, not null)? \|", re.M)


def documented_columns() -> dict:
    """Table → [(column, type)] as docs/otel-schema.md lists them."""
    text = (ROOT / "docs" / "otel-schema.md").read_text()
    sections = dict(
        (m.group(1), m.group(2))
        for m in re.finditer(r"^#+ (.+?)\n(.*?)(?=^#+ )", text, re.S | re.M)
    )

    def cols(title):
        return [(c, t) for c, t in COLUMN_ROW.findall(sections[title])]

    context = cols("Resource and scope columns (the last six columns of every table)")
    shared = cols("Metrics tables")
    head, tail = shared[:6], shared[6:]
    out = {"otel_logs": cols("`otel_logs`") + context,
           "otel_traces": cols("`otel_traces`") + context}
    for table in ["otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram",
                  "otel_metrics_exponential_histogram", "otel_metrics_summary"]:
        out[table] = head + cols(f"`{table}`") + tail + context
    return out


def test_documented_columns_are_the_real_ones(server):
    load(server)
    docs = documented_columns()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for table, columns in docs.items():
            cur = conn.execute(f"SELECT * FROM {table} LIMIT 0")
            real = [(c.name, c.type_code) for c in cur.description]
            documented = [(c, PG_TYPES[t]) for c, t in columns]
            assert real == documented, f"{table}:\n real {real}\n docs {documented}"
