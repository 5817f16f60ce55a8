"""PromQL against Prometheus itself: the same samples go by remote write to
the real Prometheus (Debian's 2.42, `--web.enable-remote-write-receiver`)
and to Sextant, then the same expressions are asked of both HTTP APIs at
the same evaluation times, and the JSON answers must agree: result type,
label sets exactly, timestamps, values to 1e-9 relative (NaN and the
infinities included), the error type of a refused query. Prometheus's
answer is the expected one; nothing here is written from Sextant's output.

The samples: counters (one reset, one with gaps, one that ends with a
staleness marker), gauges (one with a NaN sample, one tiny, one huge),
classic histograms and an info-style metric, every 15 s for 45 minutes
up to now (Prometheus takes samples up to an hour old into its head).
The comparison runs on the write buffer, then again after every table is
flushed to Parquet and Sextant restarted.
"""

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg
import pytest
from psycopg import sql
from conftest import Server
from remote_write import STALE_NAN, pb_series, snappy, write_request
from test_docs_blocks import ROOT, code_blocks
from test_prometheus import free_port, prometheus_bin

STEP_MS = 15_000
SPAN_MS = 45 * 60 * 1000


class PromServer:
    """Prometheus with nothing to scrape, taking remote writes; or, with
    `config` (a function of its own address giving its configuration),
    doing what that says."""

    def __init__(self, tmp_path, config=None):
        import subprocess

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = tmp_path / "prometheus.yml"
        path.write_text(config(f"127.0.0.1:{self.port}") if config else "global:\n  scrape_interval: 1m\n")
        config = path
        self.log_path = tmp_path / "prometheus.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                prometheus_bin(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-remote-write-receiver",
                # Stop at once, not a minute later, when what it
                # remote-writes to has gone (a restarted Sextant's new port).
                "--storage.remote.flush-deadline=1s",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("prometheus exited:\n" + self.log_path.read_text())
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        pytest.fail("prometheus not ready in 60 s:\n" + self.log_path.read_text())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def post(url, body, headers):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api(base, path, params, method="GET"):
    """(status, JSON answer) of a Prometheus API call."""
    data = urllib.parse.urlencode(params)
    if method == "GET":
        req = urllib.request.Request(f"{base}{path}?{data}")
    else:
        req = urllib.request.Request(
            f"{base}{path}",
            data=data.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def dataset(end_ms):
    """The series: (labels, [(value, ts_ms)]) with labels as pairs."""
    start = end_ms - SPAN_MS
    times = list(range(start, end_ms + 1, STEP_MS))
    out = []

    def series(name, labels, values):
        out.append(([("__name__", name)] + sorted(labels.items()), values))

    series("http_requests_total", {"job": "api", "instance": "a:80", "method": "get"},
           [(float(i * 3 + i % 7), t) for i, t in enumerate(times)])
    # A counter reset at the 100th sample.
    series("http_requests_total", {"job": "api", "instance": "b:80", "method": "get"},
           [(float((i if i < 100 else i - 100) * 2), t) for i, t in enumerate(times)])
    # Every other sample only (30 s apart).
    series("http_requests_total", {"job": "api", "instance": "a:80", "method": "post"},
           [(i * 1.5, t) for i, t in enumerate(times) if i % 2 == 0])
    # Ends at the 60th sample with the staleness marker Prometheus writes.
    series("http_requests_total", {"job": "db", "instance": "c:5432", "method": "get"},
           [(float(i), t) for i, t in enumerate(times[:60])] + [(("bits", STALE_NAN), times[60])])
    series("node_temp_celsius", {"instance": "a:80", "zone": "eu"},
           [(round(40 + 10 * math.sin(i / 10), 3), t) for i, t in enumerate(times)])
    series("node_temp_celsius", {"instance": "b:80", "zone": "us"},
           [(math.nan if i == 50 else round(-5 + (i % 13) * 1.25, 3), t) for i, t in enumerate(times)])
    series("disk_free_bytes", {"instance": "a:80", "device": "sda"},
           [(1.5e12 - i * 1e9, t) for i, t in enumerate(times)])
    series("error_ratio", {"instance": "a:80"},
           [(1e-7 * (1 + i % 5), t) for i, t in enumerate(times)])
    series("build_info", {"instance": "a:80", "version": "1.2.3", "goversion": "go1.19"},
           [(1.0, t) for t in times])
    # Cumulative bucket counts that grow 2, 5, 9 and 10 per step (times
    # `speed`), with some noise: quantiles fall inside buckets.
    bounds = [("0.1", 2), ("0.5", 5), ("1", 9), ("+Inf", 10)]
    for inst, speed in (("a:80", 1), ("b:80", 3)):
        for k, (le, per_step) in enumerate(bounds):
            series("req_duration_seconds_bucket", {"instance": inst, "le": le},
                   [(float(i * per_step * speed + i % (k + 2)), t) for i, t in enumerate(times)])
        series("req_duration_seconds_count", {"instance": inst},
               [(float(i * 4 * speed + i % 5), t) for i, t in enumerate(times)])
        series("req_duration_seconds_sum", {"instance": inst},
               [(i * 0.7 * speed, t) for i, t in enumerate(times)])
    return out


def remote_write(url, series):
    body = snappy(write_request(*(pb_series(labels, samples) for labels, samples in series)))
    return post(url + "/api/v1/write", body, {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    })


def load(*urls):
    """Writes the data set, ending a step before now, to every URL; returns
    its end (ms) and its series."""
    end_ms = int(time.time() * 1000) // STEP_MS * STEP_MS - STEP_MS
    series = dataset(end_ms)
    for url in urls:
        status, body = remote_write(url, series)
        assert status in (200, 204), (url, status, body)
    return end_ms, series


# Expressions asked as instant queries (at several times) and, where they
# are instant vectors or scalars, as range queries. `{T}` is a time inside
# the data (for `@`).
EXPRESSIONS = [
    "http_requests_total",
    'http_requests_total{job="api"}',
    'http_requests_total{method!="get"}',
    'http_requests_total{instance=~"a.*"}',
    'http_requests_total{instance!~"a.*", job!=""}',
    '{__name__=~"node_temp.*"}',
    '{__name__=~"http_requests_total|node_temp_celsius", instance="a:80"}',
    'node_temp_celsius{zone=""}',
    "http_requests_total offset 5m",
    "http_requests_total @ {T}",
    "http_requests_total[2m]",
    "http_requests_total[5m] offset 10m",
    'node_temp_celsius{zone="us"}',
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "delta(node_temp_celsius[10m])",
    "idelta(node_temp_celsius[5m])",
    "deriv(node_temp_celsius[10m])",
    "predict_linear(node_temp_celsius[10m], 600)",
    "avg_over_time(node_temp_celsius[10m])",
    "min_over_time(node_temp_celsius[10m])",
    "max_over_time(node_temp_celsius[10m])",
    "sum_over_time(node_temp_celsius[10m])",
    "count_over_time(http_requests_total[10m])",
    "last_over_time(http_requests_total[10m])",
    "stddev_over_time(node_temp_celsius[10m])",
    "stdvar_over_time(node_temp_celsius[10m])",
    "quantile_over_time(0.9, node_temp_celsius[10m])",
    "present_over_time(http_requests_total[5m])",
    'absent_over_time(http_requests_total{job="db"}[5m])',
    'absent_over_time(nonexistent_metric{job="x"}[5m])',
    "changes(node_temp_celsius[10m])",
    "resets(http_requests_total[30m])",
    "holt_winters(node_temp_celsius[10m], 0.5, 0.5)",
    "sum(rate(http_requests_total[5m]))",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (rate(http_requests_total[5m]))",
    "avg by (job) (http_requests_total)",
    "min(node_temp_celsius)",
    "max by (zone) (node_temp_celsius)",
    "count(http_requests_total)",
    "count by (method) (http_requests_total)",
    "group by (job) (http_requests_total)",
    "stddev(node_temp_celsius)",
    "stdvar(http_requests_total)",
    # Every series is 0 at the first sample: topk among equal values keeps
    # whichever came first in an order Prometheus does not define (its
    # own, in-memory, is the order series were created), so `> 0`.
    "topk(2, http_requests_total > 0)",
    "bottomk(1, rate(http_requests_total[5m]))",
    "quantile(0.5, http_requests_total)",
    'count_values("value", build_info)',
    'count_values("t", round(node_temp_celsius))',
    "histogram_quantile(0.9, rate(req_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(req_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.99, req_duration_seconds_bucket)",
    "histogram_quantile(0.75, rate(req_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.3, sum by (le) (rate(req_duration_seconds_bucket[10m])))",
    'label_replace(http_requests_total, "host", "$1", "instance", "(.*):.*")',
    'label_replace(http_requests_total, "instance", "", "instance", ".*")',
    'label_join(http_requests_total, "id", "/", "job", "instance", "method")',
    "abs(node_temp_celsius - 45)",
    "ceil(node_temp_celsius)",
    "floor(node_temp_celsius)",
    "round(node_temp_celsius, 0.5)",
    "clamp(node_temp_celsius, 35, 45)",
    "clamp_min(node_temp_celsius, 40)",
    "clamp_max(node_temp_celsius, 40)",
    "sqrt(http_requests_total)",
    "exp(node_temp_celsius / 100)",
    "ln(http_requests_total + 1)",
    "log2(http_requests_total + 1)",
    "log10(disk_free_bytes)",
    "time()",
    "timestamp(http_requests_total)",
    "timestamp(sum(http_requests_total))",
    "vector(1)",
    "scalar(sum(http_requests_total))",
    "scalar(http_requests_total)",
    "sort(node_temp_celsius)",
    "sort_desc(http_requests_total)",
    'absent(nonexistent{job="x"})',
    "absent(http_requests_total)",
    "http_requests_total / on(instance) group_left(zone) node_temp_celsius",
    "node_temp_celsius * on(instance) group_right(zone) http_requests_total",
    "rate(http_requests_total[5m]) > 0.1",
    "rate(http_requests_total[5m]) > bool 0.1",
    "0.1 < rate(http_requests_total[5m])",
    "http_requests_total > http_requests_total offset 1m",
    "node_temp_celsius == bool 40",
    'http_requests_total{job="api"} and on(instance) node_temp_celsius',
    "http_requests_total or node_temp_celsius",
    'http_requests_total unless on(instance) node_temp_celsius{zone="eu"}',
    "http_requests_total + on(job) node_temp_celsius",
    "1 + 2 * 3",
    "2 ^ 3 ^ 2",
    "-node_temp_celsius",
    "node_temp_celsius % 7",
    "node_temp_celsius atan2 10",
    "max_over_time(rate(http_requests_total[1m])[10m:1m])",
    "rate(http_requests_total[5m:30s])",
    "avg_over_time(node_temp_celsius[5m:])",
    "sum by (job) (http_requests_total @ end())",
    "http_requests_total @ start()",
    "day_of_week()",
    "hour(timestamp(http_requests_total))",
    "minute()",
    "month(vector(1700000000))",
    "year()",
    "day_of_month(vector(1709251200))",
    "days_in_month(vector(1709251200))",
    "day_of_year(vector(1709251200))",
    "error_ratio",
    "disk_free_bytes * 1e10",
    "1 / 0",
    "-1 / 0",
    "0 / 0",
    '"a string"',
]

# Expressions both must refuse, and how.
BAD = [
    "rate(http_requests_total)",
    "sum(",
    "http_requests_total{",
    "rate(http_requests_total[5m]) +",
    "unknown_function(http_requests_total)",
    "",
    'label_replace(http_requests_total, "1bad", "$1", "instance", "(.*)")',
]


def close(a, b):
    """Sample values as the API writes them (strings), to 1e-9 relative."""
    if a == b:
        return True
    x, y = float(a), float(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


def same_answer(expected, got, ordered):
    """None when `got` is Prometheus's `expected`; else why not."""
    if expected["status"] != got["status"]:
        return f"status {got['status']} where Prometheus says {expected['status']}"
    if expected["status"] == "error":
        if expected["errorType"] != got["errorType"]:
            return f"errorType {got['errorType']} where Prometheus says {expected['errorType']}"
        return None
    e, g = expected["data"], got["data"]
    if e["resultType"] != g["resultType"]:
        return f"resultType {g['resultType']} where Prometheus says {e['resultType']}"
    kind = e["resultType"]
    if kind in ("scalar", "string"):
        if e["result"][0] != g["result"][0]:
            return f"time {g['result'][0]} where Prometheus says {e['result'][0]}"
        ok = e["result"][1] == g["result"][1] if kind == "string" else close(e["result"][1], g["result"][1])
        return None if ok else f"{g['result']} where Prometheus says {e['result']}"
    key = lambda s: json.dumps(s["metric"], sort_keys=True)
    es, gs = e["result"], g["result"]
    if not ordered:
        es, gs = sorted(es, key=key), sorted(gs, key=key)
    if [key(s) for s in es] != [key(s) for s in gs]:
        return f"series {[key(s) for s in gs]} where Prometheus has {[key(s) for s in es]}"
    for a, b in zip(es, gs):
        pa = a.get("values") or [a["value"]]
        pb = b.get("values") or [b["value"]]
        if [p[0] for p in pa] != [p[0] for p in pb]:
            return f"{key(a)}: times {[p[0] for p in pb]} where Prometheus has {[p[0] for p in pa]}"
        for p, q in zip(pa, pb):
            if not close(p[1], q[1]):
                return f"{key(a)} at {p[0]}: {q[1]} where Prometheus says {p[1]}"
    return None


def compare_all(prom_url, sextant_url, end_ms):
    """Asks every expression of both; returns (evaluations, disagreements)."""
    t_mid = (end_ms - 20 * 60 * 1000) / 1000
    instants = [
        end_ms / 1000,
        end_ms / 1000 - 433.5,  # between samples
        (end_ms - SPAN_MS) / 1000 + 120,  # near the first samples
        end_ms / 1000 + 180,  # past the last sample, within the lookback
        end_ms / 1000 + 900,  # past the lookback
    ]
    ranges = [
        ((end_ms - SPAN_MS) / 1000, end_ms / 1000, "60"),
        ((end_ms - SPAN_MS) / 1000 + 67, end_ms / 1000 + 400, "37s"),
    ]
    return compare(prom_url, sextant_url, EXPRESSIONS + BAD, instants, ranges, t_mid)


def compare(prom_url, sextant_url, expressions, instants, ranges, t_mid):
    """Asks every expression of both, as an instant query at each of
    `instants` (GET) and a range query over each of `ranges` (form POST),
    `{T}` replaced by `t_mid`; returns (evaluations, disagreements)."""
    evaluations, answered, wrong = 0, 0, []
    for text in expressions:
        expr = text.replace("{T}", f"{t_mid:.3f}")
        ordered = expr.startswith(("sort", "topk", "bottomk"))
        asks = [("/api/v1/query", {"query": expr, "time": f"{t:.3f}"}, "GET") for t in instants]
        asks += [
            ("/api/v1/query_range", {"query": expr, "start": f"{s:.3f}", "end": f"{e:.3f}", "step": st}, "POST")
            for s, e, st in ranges
        ]
        for path, params, method in asks:
            es, expected = api(prom_url, path, params, method)
            gs, got = api(sextant_url, path, params, method)
            evaluations += 1
            if expected["status"] == "success" and expected["data"]["result"] != []:
                answered += 1
            why = same_answer(expected, got, ordered and path.endswith("query"))
            if why is None and es != gs:
                why = f"HTTP {gs} where Prometheus answers {es}"
            if why:
                wrong.append(f"{path} {params}: {why}")
    # Most answers have samples: the data arrived and the comparison is not
    # one of empty answers.
    assert answered > evaluations * 0.6, f"only {answered} of {evaluations} answers have samples"
    return evaluations, wrong


@pytest.fixture
def prometheus(tmp_path):
    p = PromServer(tmp_path)
    yield p
    p.stop()


def test_promql_answers_are_prometheus_answers(server, prometheus, tmp_path):
    end_ms, series = load(prometheus.url, server.http_url)

    evaluations, wrong = compare_all(prometheus.url, server.http_url, end_ms)
    n = len(EXPRESSIONS) + len(BAD)
    print(f"promql vs Prometheus (write buffer): {n} expressions, {evaluations} evaluations, "
          f"{evaluations - len(wrong)} agree")
    assert not wrong, f"{len(wrong)} of {evaluations} disagree:\n" + "\n".join(wrong[:40])

    # The same after the samples are in Parquet files and Sextant restarted.
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        tables = {labels[0][1] for labels, _ in series}
        for t in sorted(tables):
            conn.execute(f"FLUSH TABLE {t}")
    server.stop()
    server.start()
    evaluations, wrong = compare_all(prometheus.url, server.http_url, end_ms)
    print(f"promql vs Prometheus (Parquet, after a restart): {n} expressions, {evaluations} evaluations, "
          f"{evaluations - len(wrong)} agree")
    assert not wrong, f"{len(wrong)} of {evaluations} disagree:\n" + "\n".join(wrong[:40])


def test_label_and_series_endpoints_answer_as_prometheus(server, prometheus):
    end_ms, series = load(prometheus.url, server.http_url)
    asks = [
        ("/api/v1/labels", {}),
        ("/api/v1/labels", {"match[]": "node_temp_celsius"}),
        ("/api/v1/label/__name__/values", {}),
        ("/api/v1/label/instance/values", {}),
        ("/api/v1/label/instance/values", {"match[]": 'http_requests_total{job="api"}'}),
        ("/api/v1/series", {"match[]": "http_requests_total"}),
        ("/api/v1/series", {"match[]": '{__name__=~"req_.*", instance="b:80"}'}),
        ("/api/v1/series", {}),
    ]
    for path, params in asks:
        es, expected = api(prometheus.url, path, params)
        gs, got = api(server.http_url, path, params)
        assert (gs, got.get("status"), got.get("errorType")) == (es, expected["status"], expected.get("errorType")), (path, params, got, expected)
        if expected["status"] == "success":
            norm = lambda d: sorted(json.dumps(x, sort_keys=True) for x in d)
            assert norm(got["data"]) == norm(expected["data"]), (path, params, got, expected)


def promtool(*args):
    import subprocess

    out = subprocess.run(["promtool", "query", *args], capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout, out.stderr


def test_promtool_queries_sextant_as_it_queries_prometheus(server, prometheus):
    """`promtool query instant|range|labels|series` (Debian's, the same
    package as the server): the same output from Sextant as from
    Prometheus."""
    end_ms, series = load(prometheus.url, server.http_url)
    end, start = end_ms / 1000, (end_ms - SPAN_MS) / 1000
    commands = [
        ("instant", f"--time={end}", "{url}", "sum by (job) (rate(http_requests_total[5m]))"),
        ("instant", f"--time={end}", "{url}", "node_temp_celsius"),
        ("instant", f"--time={end}", "{url}", "scalar(count(http_requests_total))"),
        ("range", f"--start={start}", f"--end={end}", "--step=5m", "{url}", "rate(http_requests_total[5m])"),
        ("labels", "{url}", "instance"),
        ("labels", "--match=node_temp_celsius", "{url}", "zone"),
        ("series", "--match=req_duration_seconds_count", "{url}"),
        ("instant", f"--time={end}", "{url}", "rate(http_requests_total)"),
    ]
    printed = 0
    for cmd in commands:
        ran = []
        for url in (prometheus.url, server.http_url):
            code, out, err = promtool(*(a.replace("{url}", url) for a in cmd))
            # promtool names the server in some errors.
            ran.append((code, sorted(out.splitlines()), err.replace(url, "URL")))
        assert ran[1][:2] == ran[0][:2], (cmd, ran)
        if ran[0][0] == 0:
            assert ran[1][1], (cmd, "printed nothing")
            printed += len(ran[1][1])
        else:
            # A refused query: promtool reports the API's error type.
            assert "bad_data" in ran[1][2], (cmd, ran)
    print(f"promtool: {len(commands)} commands, {printed} lines, the same from Sextant as from Prometheus")


def rows_of(answer):
    """Prometheus's answer as (seconds, value, labels) rows."""
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [(float(data["result"][0]), float(data["result"][1]), {})]
    out = []
    for s in data["result"]:
        for t, v in s.get("values") or [s["value"]]:
            out.append((float(t), float(v), s["metric"]))
    return out


def test_promql_from_sql_answers_as_prometheus(server, prometheus):
    """`promql(...)` in SQL over pgwire: the rows are Prometheus's samples."""
    end_ms, series = load(prometheus.url, server.http_url)
    end, start = end_ms / 1000, (end_ms - SPAN_MS) / 1000
    cases = [
        ("sum by (job) (rate(http_requests_total[5m]))", None),
        ('histogram_quantile(0.75, rate(req_duration_seconds_bucket[5m]))', None),
        ("scalar(count(http_requests_total))", None),
        ("rate(http_requests_total[5m])", "range"),
        ("max by (zone) (node_temp_celsius)", "range"),
    ]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for expr, kind in cases:
            if kind == "range":
                params = {"query": expr, "start": start, "end": end, "step": "120"}
                _, expected = api(prometheus.url, "/api/v1/query_range", params)
                # Written into the statement: a table function's arguments
                # are planned before any parameter is bound.
                got = conn.execute(sql.SQL(
                    "SELECT extract(epoch FROM time), value, labels FROM promql({}, to_timestamp({}), to_timestamp({}), '2m')"
                ).format(sql.Literal(expr), sql.Literal(start), sql.Literal(end))).fetchall()
            else:
                _, expected = api(prometheus.url, "/api/v1/query", {"query": expr, "time": end})
                got = conn.execute(sql.SQL(
                    "SELECT extract(epoch FROM time), value, labels FROM promql({}, to_timestamp({}))"
                ).format(sql.Literal(expr), sql.Literal(end))).fetchall()
            want = sorted(rows_of(expected), key=lambda r: (json.dumps(r[2], sort_keys=True), r[0]))
            rows = sorted(((float(t), v, json.loads(l)) for t, v, l in got),
                          key=lambda r: (json.dumps(r[2], sort_keys=True), r[0]))
            assert len(want) > 0, (expr, expected)
            assert [(r[0], r[2]) for r in rows] == [(r[0], r[2]) for r in want], (expr, rows[:5], want[:5])
            for a, b in zip(rows, want):
                assert close(repr(a[1]), repr(b[1])), (expr, a, b)
        # A materialized view can hold a PromQL expression's samples.
        n = conn.execute(
            "SELECT count(*) FROM promql('rate(http_requests_total[5m])', now() - INTERVAL '10 minutes', now(), '1m')"
        ).fetchone()[0]
        assert n > 0
        # Bad input is an error that names it; the server stays up.
        for bad, state in [
            ("SELECT * FROM promql('sum(')", "42"),
            ("SELECT * FROM promql('up', 'yesterday')", "42"),
            ("SELECT * FROM promql('up', now(), now() - INTERVAL '1 hour', '1m')", "42"),
            ("SELECT * FROM promql('http_requests_total[5m]', now() - INTERVAL '1 hour', now(), '1m')", "42"),
        ]:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(bad)
            assert e.value.sqlstate.startswith(state), (bad, e.value.sqlstate, str(e.value))
            assert "promql" in str(e.value).lower() or "invalid parameter" in str(e.value), (bad, str(e.value))
        # The same rows over Flight SQL (ADBC), as its documentation shows it.
        import adbc_driver_flightsql.dbapi as flight_sql

        text = ("SELECT extract(epoch FROM time) AS t, value, labels FROM "
                f"promql('sum by (job) (rate(http_requests_total[5m]))', to_timestamp({end}))")
        pg_rows = sorted(conn.execute(text).fetchall())
        with flight_sql.connect(f"grpc://{server.addrs['flight']}", autocommit=True) as fconn:
            with fconn.cursor() as cur:
                cur.execute(text)
                flight_rows = sorted(tuple(r) for r in cur.fetchall())
        assert len(pg_rows) == 1 and [(float(a), b, c) for a, b, c in flight_rows] == [
            (float(a), b, c) for a, b, c in pg_rows], (flight_rows, pg_rows)
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM promql(%s)", ("up",))
        assert "written in the statement" in str(e.value), str(e.value)
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_promql_reads_only_what_the_caller_may_and_shows_in_system_queries(server):
    """The API is behind the HTTP listener's auth: a reader sees the metric
    tables it may SELECT (others are absent, as metrics it has no series
    of), with a password or a token; its queries show in system.queries
    with protocol promql."""
    import base64

    end_ms, _ = load(server.http_url)
    host, port = server.pg
    with psycopg.connect(f"host={host} port={port} dbname=sextant user=setup", autocommit=True) as c:
        c.execute("CREATE USER root WITH SUPERUSER PASSWORD 'root-pw'")
        c.execute("CREATE USER temps WITH PASSWORD 'temps-pw'")
        c.execute("GRANT SELECT ON node_temp_celsius TO temps")
    with psycopg.connect(f"host={host} port={port} dbname=sextant user=root password=root-pw", autocommit=True) as c:
        secret = c.execute("CREATE TOKEN grafana FOR USER temps").fetchone()[2]

    def ask(query, auth):
        url = f"{server.http_url}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": end_ms / 1000})
        req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert ask("node_temp_celsius", None)[0] == 401
    basic = "Basic " + base64.b64encode(b"temps:temps-pw").decode()
    for auth in (basic, f"Bearer {secret}"):
        status, answer = ask('{__name__=~".+"}', auth)
        assert status == 200, answer
        names = {s["metric"]["__name__"] for s in answer["data"]["result"]}
        assert names == {"node_temp_celsius"}, names
        status, answer = ask("http_requests_total", auth)
        assert (status, answer["data"]["result"]) == (200, []), answer
    root = "Basic " + base64.b64encode(b"root:root-pw").decode()
    status, answer = ask("count(http_requests_total)", root)
    assert status == 200 and answer["data"]["result"][0]["value"][1] == "3", answer
    with psycopg.connect(f"host={host} port={port} dbname=sextant user=root password=root-pw", autocommit=True) as c:
        rows = c.execute(
            "SELECT user_name, query, state FROM system.queries WHERE protocol = 'promql' ORDER BY query_id"
        ).fetchall()
    assert ("temps", "node_temp_celsius", "done") not in rows  # refused before it ran (401)
    assert ("root", "count(http_requests_total)", "done") in rows, rows
    assert ("temps", '{__name__=~".+"}', "done") in rows, rows


def test_grafana_prometheus_data_source_requests(server, prometheus):
    """The requests Grafana's Prometheus data source makes (its backend,
    pkg/promlib): the health check (an instant `1+1`, form POST), the
    metric and label browsers (label names and values, series, metadata
    with start and end) and a panel's range query with
    `$__rate_interval` resolved as Grafana resolves it (`1m0s`,
    `max($__interval + scrape interval, 4 * scrape interval)`), asked of
    Sextant and of Prometheus."""
    end_ms, _ = load(prometheus.url, server.http_url)
    end, start = end_ms / 1000, end_ms / 1000 - 1800
    health_status, health = api(server.http_url, "/api/v1/query", {"query": "1+1", "time": f"{end:.3f}"}, "POST")
    assert (health_status, health["data"]) == (200, {"resultType": "scalar", "result": [float(f"{end:.3f}") if end % 1 else int(end), "2"]}), health
    asks = [
        ("/api/v1/label/__name__/values", {"start": int(start), "end": int(end)}, "GET"),
        ("/api/v1/labels", {"start": int(start), "end": int(end), "match[]": "http_requests_total"}, "GET"),
        ("/api/v1/label/job/values", {"start": int(start), "end": int(end), "match[]": "http_requests_total"}, "GET"),
        ("/api/v1/series", {"start": int(start), "end": int(end), "match[]": "{__name__=\"req_duration_seconds_bucket\"}"}, "GET"),
        ("/api/v1/query_range", {"query": "sum by (job) (rate(http_requests_total[1m0s]))",
                                 "start": int(start), "end": int(end), "step": 15}, "POST"),
        ("/api/v1/query_range", {"query": "histogram_quantile(0.95, sum by (le) (rate(req_duration_seconds_bucket[1m0s])))",
                                 "start": int(start), "end": int(end), "step": 30}, "POST"),
        ("/api/v1/query", {"query": "node_temp_celsius", "time": int(end)}, "POST"),
    ]
    for path, params, method in asks:
        es, expected = api(prometheus.url, path, params, method)
        gs, got = api(server.http_url, path, params, method)
        assert gs == es == 200, (path, gs, got)
        if path.endswith(("values", "labels", "series")):
            norm = lambda d: sorted(json.dumps(x, sort_keys=True) for x in d)
            assert norm(got["data"]) == norm(expected["data"]), (path, got, expected)
        else:
            why = same_answer(expected, got, False)
            assert why is None, (path, params, why)
    # The metadata the metric browser asks for: Prometheus 2.42 has it from
    # scrapes only, so both have none for remote-written series.
    assert api(server.http_url, "/api/v1/metadata", {})[1]["data"] == api(prometheus.url, "/api/v1/metadata", {})[1]["data"]


def test_a_query_past_its_timeout_stops_with_prometheus_timeout_error(server):
    """`timeout` (and --promql-timeout) stops a query: 503 with errorType
    timeout, as Prometheus answers; system.queries shows it cancelled; the
    server answers the next query."""
    now = time.time()
    params = {
        "query": "max_over_time(vector(1)[1h:1s])",
        "start": now - 11000 * 60, "end": now, "step": "60", "timeout": "0.001",
    }
    status, answer = api(server.http_url, "/api/v1/query_range", params, "POST")
    assert (status, answer["status"], answer["errorType"]) == (503, "error", "timeout"), answer
    assert "timed out" in answer["error"], answer
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        state = conn.execute(
            "SELECT state FROM system.queries WHERE protocol = 'promql' AND query LIKE 'max_over_time%'"
        ).fetchall()
    assert state == [("cancelled",)], state
    status, answer = api(server.http_url, "/api/v1/query", {"query": "1+1"})
    assert (status, answer["data"]["result"][1]) == (200, "2"), answer


def test_kill_query_stops_a_running_promql_query(server):
    """A PromQL query shows in system.queries while it runs, and KILL QUERY
    stops it: 503 with errorType canceled, as Prometheus 2.42 answers a
    cancelled query; the server answers the next query."""
    import threading

    now = time.time()
    expr = "max_over_time(vector(1)[1h:1s])"
    params = {"query": expr, "start": now - 11000 * 60, "end": now, "step": "60"}
    result = {}
    t = threading.Thread(
        target=lambda: result.update(answer=api(server.http_url, "/api/v1/query_range", params, "POST"))
    )
    t.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        deadline = time.time() + 30
        row = None
        while row is None:
            assert time.time() < deadline and t.is_alive(), ("never seen running", result)
            row = conn.execute(
                "SELECT query_id FROM system.queries WHERE protocol = 'promql' AND query = %s AND state = 'running'",
                (expr,),
            ).fetchone()
            time.sleep(0.05)
        conn.execute(f"KILL QUERY {row[0]}")
        t.join(timeout=60)
        assert not t.is_alive()
        status, answer = result["answer"]
        assert (status, answer["status"], answer["errorType"]) == (503, "error", "canceled"), answer
        state = conn.execute("SELECT state FROM system.queries WHERE query_id = %s", (row[0],)).fetchone()
        assert state == ("cancelled",), state
    status, answer = api(server.http_url, "/api/v1/query", {"query": "1+1"})
    assert (status, answer["data"]["result"][1]) == (200, "2"), answer


# PromQL over what Prometheus scrapes of itself: counters, gauges, a
# summary (go_gc_duration_seconds) and histograms
# (prometheus_http_request_duration_seconds) of a real process. `{T}` is a
# time inside the minute.
SCRAPED = [
    "up",
    'up{job="prometheus"}',
    'prometheus_http_requests_total{handler="/metrics"}',
    'prometheus_http_requests_total{code!="200"}',
    'prometheus_http_requests_total{handler=~"/api/v1/.*"}',
    'prometheus_http_requests_total{handler!~"/api/v1/.*", code="200"}',
    '{__name__=~"go_memstats_.*_bytes", job="prometheus"}',
    '{__name__=~"scrape_.*"}',
    "go_goroutines offset 10s",
    "go_goroutines @ {T}",
    "process_cpu_seconds_total[20s]",
    "scrape_duration_seconds[15s] offset 10s",
    "rate(process_cpu_seconds_total[30s])",
    'rate(prometheus_http_requests_total{handler="/metrics"}[20s])',
    "irate(process_cpu_seconds_total[30s])",
    'increase(prometheus_http_requests_total{handler="/metrics"}[30s])',
    "delta(go_goroutines[30s])",
    "idelta(go_memstats_alloc_bytes[30s])",
    "deriv(go_memstats_alloc_bytes[30s])",
    "predict_linear(go_memstats_alloc_bytes[30s], 60)",
    "avg_over_time(go_goroutines[30s])",
    "min_over_time(scrape_duration_seconds[30s])",
    "max_over_time(scrape_duration_seconds[30s])",
    "sum_over_time(scrape_samples_scraped[30s])",
    "count_over_time(up[30s])",
    "last_over_time(go_memstats_alloc_bytes[30s])",
    "stddev_over_time(scrape_duration_seconds[30s])",
    "stdvar_over_time(go_goroutines[30s])",
    "quantile_over_time(0.9, scrape_duration_seconds[30s])",
    "present_over_time(up[30s])",
    "absent_over_time(up[30s])",
    'absent_over_time(nonexistent{job="x"}[30s])',
    "changes(go_memstats_alloc_bytes[30s])",
    "resets(go_memstats_heap_alloc_bytes[30s])",
    "resets(process_cpu_seconds_total[30s])",
    "holt_winters(go_memstats_alloc_bytes[30s], 0.5, 0.5)",
    "sum(rate(prometheus_http_requests_total[30s]))",
    "sum by (handler) (rate(prometheus_http_requests_total[30s]))",
    "sum without (code) (prometheus_http_requests_total)",
    "avg by (job) (go_memstats_alloc_bytes)",
    "min(scrape_duration_seconds)",
    "max by (quantile) (go_gc_duration_seconds)",
    "count(prometheus_http_requests_total)",
    "count by (code) (prometheus_http_requests_total)",
    "group by (handler) (prometheus_http_requests_total)",
    "stddev(go_gc_duration_seconds)",
    "stdvar(prometheus_http_requests_total)",
    # topk, bottomk and sort over values that cannot tie (byte counts):
    # among equal values each keeps an order Prometheus does not define.
    'topk(2, {__name__=~"go_memstats_(alloc|sys|heap_inuse|stack_inuse)_bytes"})',
    'bottomk(2, {__name__=~"go_memstats_(alloc|sys|heap_inuse|stack_inuse)_bytes"})',
    "quantile(0.5, go_gc_duration_seconds)",
    'count_values("goroutines", go_goroutines)',
    'count_values("version", prometheus_build_info)',
    "histogram_quantile(0.9, rate(prometheus_http_request_duration_seconds_bucket[30s]))",
    'histogram_quantile(0.5, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket{handler="/metrics"}[30s])))',
    "histogram_quantile(0.99, prometheus_http_response_size_bytes_bucket)",
    'label_replace(up, "host", "$1", "instance", "(.*):.*")',
    'label_join(up, "id", "/", "job", "instance")',
    "abs(deriv(go_memstats_alloc_bytes[30s]))",
    "ceil(scrape_duration_seconds * 1000)",
    "floor(go_memstats_alloc_bytes / 1e6)",
    "round(go_memstats_alloc_bytes / 1e6, 0.1)",
    "clamp(go_goroutines, 10, 30)",
    "clamp_min(go_goroutines, 40)",
    "clamp_max(go_goroutines, 20)",
    "sqrt(go_memstats_alloc_bytes)",
    "exp(-scrape_duration_seconds)",
    "ln(go_memstats_alloc_bytes)",
    "log2(go_goroutines)",
    "log10(process_resident_memory_bytes)",
    "time()",
    "timestamp(up)",
    "vector(1)",
    "scalar(up)",
    "scalar(prometheus_http_requests_total)",
    'sort({__name__=~"go_memstats_(alloc|sys|heap_inuse|stack_inuse)_bytes"})',
    'sort_desc({__name__=~"go_memstats_(alloc|sys|heap_inuse|stack_inuse)_bytes"})',
    "absent(up)",
    'absent(nonexistent{job="x"})',
    "prometheus_http_requests_total * on(instance, job) group_left(version) prometheus_build_info",
    "prometheus_build_info * on(instance) group_right(version) prometheus_http_requests_total",
    "go_memstats_alloc_bytes > bool 1e6",
    "scrape_duration_seconds > 0.001",
    "up == bool 1",
    "up and on(job) go_goroutines",
    "up or go_goroutines",
    'prometheus_http_requests_total unless on(handler) prometheus_http_requests_total{handler="/metrics"}',
    "go_memstats_alloc_bytes / go_memstats_sys_bytes",
    "process_resident_memory_bytes - ignoring(job) process_virtual_memory_bytes",
    "max_over_time(rate(process_cpu_seconds_total[10s])[30s:5s])",
    "rate(process_cpu_seconds_total[30s:2s])",
    "avg_over_time(go_goroutines[30s:])",
    "sum(up @ end())",
    "go_goroutines @ start()",
    "hour(timestamp(up))",
    "minute()",
    "day_of_week()",
]


def scrape_config(url):
    """Prometheus scraping itself every second and remote-writing it all to
    `url`: one shard, so samples arrive in the order they were scraped, and
    metric metadata every 5 s (the default is a minute)."""
    return lambda me: f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{me}"]
remote_write:
  - url: {url}/api/v1/write
    queue_config:
      max_shards: 1
      batch_send_deadline: 1s
    metadata_config:
      send_interval: 5s
"""


def latest_scrape(url):
    """The time (s) of the latest `up` sample `url` holds, or None."""
    status, answer = api(url, "/api/v1/query", {"query": "max(timestamp(up))"})
    if status != 200 or not answer["data"]["result"]:
        return None
    return float(answer["data"]["result"][0]["value"][1])


def flush_every_table(server, compact=False):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        _, names = api(server.http_url, "/api/v1/label/__name__/values", {})
        for t in names["data"]:
            conn.execute(sql.SQL("FLUSH TABLE {}").format(sql.Identifier(t)))
            if compact:
                conn.execute(sql.SQL("COMPACT TABLE {}").format(sql.Identifier(t)))
        return len(names["data"])


def test_prometheus_scraping_itself_into_sextant_answers_as_prometheus(tmp_path):
    """The real Prometheus scrapes itself every second for a minute and
    remote-writes what it scrapes to Sextant; then the same PromQL is asked
    of both at the same times over that minute: in Sextant's write buffer
    and Parquet files at once (every table was flushed half way), then
    after flushing and compacting every table and a restart. Sextant's
    /api/v1/metadata answers what Prometheus's does, from the metadata
    remote write carried. Both evaluate a subquery without a step every
    second (Prometheus's evaluation_interval, Sextant's
    --promql-subquery-step)."""
    (tmp_path / "data").mkdir()
    server = Server(tmp_path / "data", ["--promql-subquery-step", "1s"])
    server.start()
    prom = PromServer(tmp_path, scrape_config(server.http_url))
    try:
        began = time.time()
        first = None
        while first is None and time.time() < began + 30:
            time.sleep(0.5)
            first = latest_scrape(prom.url)
        assert first is not None, "Prometheus scraped nothing in 30 s:\n" + prom.log_path.read_text()[-3000:]
        time.sleep(30)
        tables = flush_every_table(server)
        time.sleep(30)
        # Every evaluation is at or before `end`; Sextant holds every sample
        # up to it once it holds a later scrape (one shard: in order).
        end = math.floor(time.time()) - 3
        deadline = time.time() + 60
        while (latest_scrape(server.http_url) or 0) <= end:
            assert time.time() < deadline, "Sextant is behind Prometheus's remote write:\n" + server.log()[-3000:]
            time.sleep(0.5)

        # Metadata: Prometheus's own (from its target) and Sextant's (from
        # remote write, sent every 5 s).
        _, theirs = api(prom.url, "/api/v1/metadata", {})
        assert len(theirs["data"]) > 50, theirs
        deadline = time.time() + 30
        while True:
            _, ours = api(server.http_url, "/api/v1/metadata", {})
            if ours["data"] == theirs["data"] or time.time() > deadline:
                break
            time.sleep(1)
        assert ours["data"] == theirs["data"], {
            k: (theirs["data"].get(k), ours["data"].get(k))
            for k in set(theirs["data"]) | set(ours["data"])
            if theirs["data"].get(k) != ours["data"].get(k)
        }
        for params in ({"metric": "go_goroutines"}, {"metric": "nonexistent"}, {"limit": "0"}):
            assert api(server.http_url, "/api/v1/metadata", params) == api(prom.url, "/api/v1/metadata", params), params
        # docs/promql.md's example is the answer for go_goroutines.
        (example,) = [b for b in code_blocks((ROOT / "docs/promql.md").read_text(), "json") if "go_goroutines" in b]
        assert api(server.http_url, "/api/v1/metadata", {"metric": "go_goroutines"}) == (200, json.loads(example))
        _, some = api(server.http_url, "/api/v1/metadata", {"limit": "3"})
        assert len(some["data"]) == 3, some
        status, bad = api(server.http_url, "/api/v1/metadata", {"limit": "x"})
        assert (status, bad["errorType"]) == (400, "bad_data"), bad

        start = first + 2
        instants = [end, end - 7.5, end - 25.3, start + 20]
        ranges = [(start, end, "5"), (start + 3.3, end, "2s")]
        n = len(SCRAPED)
        evaluations, wrong = compare(prom.url, server.http_url, SCRAPED, instants, ranges, end - 17)
        print(f"promql over Prometheus scraping itself ({tables} metrics, write buffer and Parquet): "
              f"{n} expressions, {evaluations} evaluations, {evaluations - len(wrong)} agree")
        assert not wrong, f"{len(wrong)} of {evaluations} disagree:\n" + "\n".join(wrong[:40])

        flush_every_table(server, compact=True)
        server.stop()
        server.start()
        evaluations, wrong = compare(prom.url, server.http_url, SCRAPED, instants, ranges, end - 17)
        print(f"promql over Prometheus scraping itself (compacted, after a restart): "
              f"{n} expressions, {evaluations} evaluations, {evaluations - len(wrong)} agree")
        assert not wrong, f"{len(wrong)} of {evaluations} disagree:\n" + "\n".join(wrong[:40])
        # The metadata is in the catalog: the restart kept it.
        _, after = api(server.http_url, "/api/v1/metadata", {})
        assert after["data"] == ours["data"]
    finally:
        prom.stop()
