"""Every runnable ```sql block of README.md and docs/ runs, in document
order, on a real server (test_docs_queries.py checks the answers of the
blocks marked `-- example:` in docs/otel-schema.md and docs/ingest.md), and
every `$ curl` example answers the status, headers and exact error body the
document quotes; and the errors and answers the documents quote in their
prose (docs/ingest.md's, and the table of gaps in docs/postgres-compat.md)
are what the server answers. Every other fenced block (commands,
configuration, quoted answers) is listed in BLOCK_TESTS with the test that
runs or compares it, or the reason none does.

A block is a synopsis, not run, when it shows grammar: `[optional]` parts,
`<placeholders>`, `{a | b}` choices, `...` or Grafana's `$__` macros. Each
document's count of runnable and synopsis blocks is listed here, so a
block that stops running (or a new one) fails the test until it is looked
at. A few tables stand in for the data a document assumes (`cpu`, `teams`,
an OTLP export for `otel_logs` and `otel_traces`).
"""

import json
import re
import time
from pathlib import Path

import psycopg
import pytest
from conftest import Server

ROOT = Path(__file__).resolve().parents[2]

# document: (runnable blocks, synopsis blocks, setup statements)
DOCS = {
    "README.md": (1, 1, []),
    "docs/alerts.md": (1, 2, ["CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)"]),
    "docs/observability.md": (1, 0, []),
    "docs/promql.md": (1, 0, []),
    "docs/security.md": (1, 2, []),
    "docs/storage.md": (5, 0, [
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)",
        "CREATE TABLE app_events (time TIMESTAMP NOT NULL, message TEXT, attributes TEXT)",
    ]),
    "docs/views.md": (3, 0, [
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)",
        "INSERT INTO cpu VALUES (now(), 'web-1', 42.5)",
        "CREATE TABLE teams (host TEXT, team TEXT)",
        "CREATE TABLE hosts (host TEXT, team TEXT)",
    ]),
}

SYNOPSIS = re.compile(r"\[(?!\d+\])[^\]]*\]|<[a-z][^>]*>|\{[^}]*\|[^}]*\}|\.\.\.|\$__")


def started(tmp_path) -> Server:
    """A server of its own, on a fresh data directory under `tmp_path`."""
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data)
    server.start()
    return server


def prose(doc: str) -> str:
    """The text of `doc` with its line breaks and indents as single spaces,
    so that a quote wrapped over lines is found."""
    return " ".join((ROOT / doc).read_text().split())


def run_sql(server: Server, statements):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def is_synopsis(statement: str) -> bool:
    """Grammar outside string literals (`'E[0-9]+'` is a regex, not a
    choice) and array subscripts (`[1]`)."""
    return bool(SYNOPSIS.search(re.sub(r"'(?:[^']|'')*'", "''", statement)))


def code_blocks(text: str, language: str):
    """The fenced blocks of `text` in `language` ("" for none); a block
    indented under a list item is read without its indent."""
    blocks, current, lang, indent = [], None, None, 0
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            if current is None:
                current, lang, indent = [], stripped[3:].strip(), len(line) - len(stripped)
            else:
                if lang == language:
                    blocks.append("\n".join(current) + "\n")
                current = None
            continue
        if current is not None:
            current.append(line[indent:] if line[:indent].strip() == "" else line)
    return blocks


def sql_blocks(text: str):
    return code_blocks(text, "sql")


def statements(block: str):
    """The block's statements: split at `;` outside quotes, comments dropped."""
    out, cur, quote = [], [], None
    for line in block.splitlines():
        if quote is None and line.strip().startswith("--"):
            continue
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "-" and line[i:i + 2] == "--":
                break
            elif ch == ";":
                out.append("".join(cur).strip())
                cur = []
                continue
            cur.append(ch)
        cur.append("\n")
    rest = "".join(cur).strip()
    if rest:
        out.append(rest)
    return [s for s in out if s]


def otlp_export(server):
    """One span and one log of the trace they share, so the otel tables
    exist with their columns."""
    now = time.time_ns()
    trace, span = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    attrs = [{"key": "sql", "value": {"stringValue": "SELECT 1"}}]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "sextant"}}]}
    traces = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": span, "name": "query", "kind": 2,
        "startTimeUnixNano": str(now - 10**6), "endTimeUnixNano": str(now),
        "attributes": attrs, "status": {"code": 2}}]}]}]}
    logs = {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [{
        "timeUnixNano": str(now), "severityNumber": 17, "body": {"stringValue": "code=E42 failed"},
        "traceId": trace, "spanId": span, "attributes": attrs}]}]}]}
    for path, body in [("/v1/traces", traces), ("/v1/logs", logs)]:
        status, _, resp = server.post(path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        assert status == 200, (path, status, resp)


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_runnable_sql_block_runs(tmp_path, doc):
    runnable, synopsis, setup = DOCS[doc]
    blocks = sql_blocks((ROOT / doc).read_text())
    run = [b for b in blocks if not any(is_synopsis(s) for s in statements(b))]
    assert (len(run), len(blocks) - len(run)) == (runnable, synopsis), (
        f"{doc}: {len(run)} runnable and {len(blocks) - len(run)} synopsis blocks; "
        "check the new or changed blocks and update DOCS")
    server = started(tmp_path)
    otlp_export(server)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for sql in setup:
            conn.execute(sql)
        for block in run:
            for sql in statements(block):
                try:
                    conn.execute(sql)
                except psycopg.Error as e:
                    pytest.fail(f"{doc}: {sql!r} failed: {e.sqlstate} {e}")
    assert server.proc.poll() is None


# ---------------------------------------------------------------------------
# The curl examples: every `$ curl ...` of a document runs, in order, against
# a real server (the documents' 127.0.0.1:4318 is the server's HTTP address),
# and answers the status line, the headers shown and the exact body quoted.

# document: commands run
CURL_DOCS = {"docs/ingest.md": 11}

TRACE = "5b8efff798038103d269b633813fc60c"


def spans_json() -> bytes:
    """The `spans.json` docs/ingest.md describes: one resource, one scope,
    seven spans, six of them bad (the reasons its answer quotes)."""
    def span(name, **fields):
        s = {"traceId": TRACE, "spanId": "eee19b7ec3c1b174", "name": name, "kind": 2,
             "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000000001"}
        s.update(fields)
        return {k: v for k, v in s.items() if v is not None}
    spans = [
        span("ok"),
        span("short id", traceId="5b8efff798038103"),
        span("no start", startTimeUnixNano=None),
        span("backwards", startTimeUnixNano="1700000000000000002", endTimeUnixNano="1700000000000000001"),
        span("future", startTimeUnixNano="18446744073709551615", endTimeUnixNano="18446744073709551615"),
        span("no trace", traceId=None),
        span("no id", spanId=None),
    ]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}).encode()


def curl_examples(text: str):
    """(command, expected lines, server flags) for each `$ curl` of the plain
    code blocks; a block that names `# --max-body-size 1KiB` runs on a server
    started with it."""
    out = []
    for block in code_blocks(text, ""):
        flags = ("--max-body-size", "1KiB") if "# --max-body-size 1KiB" in block else ()
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ curl"):
                i += 1
                continue
            command = lines[i][2:].split("  #")[0].rstrip()
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            i += 1
            expected = []
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            out.append((command, expected, flags))
    return out


@pytest.mark.parametrize("doc", sorted(CURL_DOCS))
def test_every_curl_example_answers_as_quoted(tmp_path, doc):
    import subprocess
    run = curl_examples((ROOT / doc).read_text())
    assert len(run) == CURL_DOCS[doc], len(run)
    servers = {}

    def server_with(flags):
        if flags not in servers:
            data = tmp_path / f"data{len(servers)}"
            data.mkdir()
            servers[flags] = Server(data, extra_args=flags)
            servers[flags].start()
        return servers[flags]
    # The files the examples send: the spans.json the document describes,
    # a body past 1 KiB, a gzip and a snappy body that expand past it (the
    # .br one is refused unread).
    (tmp_path / "spans.json").write_bytes(spans_json())
    (tmp_path / "spans.json.br").write_bytes(b"\x00")
    (tmp_path / "big.txt").write_bytes(b"m,host=a v=1 1\n" * 200)
    (tmp_path / "bomb.gz").write_bytes(__import__("gzip").compress(b"m v=1 1\n" * 10_000))
    from remote_write import varint
    # Refused from the length its header announces, before decompressing.
    (tmp_path / "rwbomb").write_bytes(varint(1 << 20) + b"\x00")
    for command, expected, flags in run:
        server = server_with(flags)
        command = command.replace("127.0.0.1:4318", server.addrs["http"]) + " -sS"
        got = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        lines = got.stdout.replace("\r\n", "\n").split("\n")
        status = next((ln for ln in expected if ln.startswith("HTTP/")), None)
        assert status and lines[0] == status, (command, got.stdout, got.stderr)
        headers = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip()
                   for ln in lines[1:] if ":" in ln and not ln.startswith("{")}
        for ln in expected:
            if re.match(r"^[a-z-]+: ", ln):
                name, value = ln.split(": ", 1)
                assert headers.get(name) == value, (command, ln, got.stdout)
        body = [ln for ln in expected if ln.startswith("{")]
        if body:
            assert got.stdout.rstrip("\n").split("\n")[-1] == body[-1], (command, got.stdout)
    # psql's `\d` of the tables the examples made, as the document shows it.
    described = [b for b in code_blocks((ROOT / doc).read_text(), "") if 'Table "public.' in b]
    assert len(described) == {"docs/ingest.md": 2}.get(doc, 0), described
    server = server_with(())
    for block in described:
        table = re.search(r'Table "public\.([a-z_]+)"', block).group(1)
        if table == "http_requests_total":
            # The sample of the document's own example.
            from remote_write import pb_series, snappy, write_request
            status, _, _ = server.post("/api/v1/write", snappy(write_request(pb_series(
                [("__name__", "http_requests_total"), ("code", "200"), ("instance", "a:9100"), ("job", "api")],
                [(17.0, 1704067200000)]))), {"Content-Type": "application/x-protobuf",
                                              "Content-Encoding": "snappy"})
            assert status == 204, status
        host, port = server.addrs["pg"].rsplit(":", 1)
        got = subprocess.run(["psql", "-h", host, "-p", port, "-U", "sextant", "-d", "sextant", "-c", f"\\d {table}"],
                             capture_output=True, text=True, timeout=30)
        shown = [ln.rstrip() for ln in got.stdout.strip("\n").splitlines()]
        assert shown == [ln.rstrip() for ln in block.strip("\n").splitlines()], (table, got.stdout, got.stderr)
    assert all(s.proc.poll() is None for s in servers.values())


def test_otel_schema_partial_success_sample(tmp_path):
    """docs/otel-schema.md's partial_success sample is what a request with
    a short trace id as its 2nd span and a backwards span as its 4th gets."""
    text = (ROOT / "docs/otel-schema.md").read_text()
    quoted = [b.strip() for b in code_blocks(text, "json") if "partialSuccess" in b]
    assert len(quoted) == 1, quoted
    spans = json.loads(spans_json())
    chosen = spans["resourceSpans"][0]["scopeSpans"][0]["spans"]
    by_name = {s["name"]: s for s in chosen}
    spans["resourceSpans"][0]["scopeSpans"][0]["spans"] = [
        by_name["ok"], by_name["short id"], dict(by_name["ok"], name="ok too"), by_name["backwards"]]
    server = started(tmp_path)
    status, _, body = server.post("/v1/traces", json.dumps(spans).encode(), {"Content-Type": "application/json"})
    assert status == 200, (status, body)
    text = body.decode() if isinstance(body, bytes) else body
    assert text == quoted[0], text


# Errors docs/ingest.md quotes in its prose: (the quote, how to get it).
INGEST_PROSE_ERRORS = [
    ('404\n{"error":"no endpoint at /v1/foo"}', "POST", "/v1/foo", {}, b""),
    ('405 {"error":"GET is not allowed on /v1/traces: use POST"}', "GET", "/v1/traces", {}, None),
    ('400 {"error":"unknown precision \\"h\\": use ns, us, ms or\n  s"}', "POST", "/api/v2/write?precision=h", {}, b"m v=1 1"),
    ('415\n{"error":"Content-Encoding \\"gzip\\" is not supported: remote write bodies are\nsnappy-compressed"}',
     "POST", "/api/v1/write", {"Content-Encoding": "gzip"}, b"x"),
]


def test_errors_quoted_in_ingest_prose(tmp_path):
    import urllib.error
    import urllib.request
    text = (ROOT / "docs/ingest.md").read_text()
    server = started(tmp_path)
    for quote, method, path, headers, body in INGEST_PROSE_ERRORS:
        assert quote in text, quote
        status, message = quote.replace("\n  ", " ").replace("\n", " ").split(" ", 1)
        req = urllib.request.Request(f"http://{server.addrs['http']}{path}", data=body, method=method,
                                     headers=headers)
        try:
            urllib.request.urlopen(req, timeout=10)
            pytest.fail(f"{method} {path} succeeded")
        except urllib.error.HTTPError as e:
            assert (e.code, e.read().decode()) == (int(status), message), quote


# What docs/postgres-compat.md says a statement does (its table of gaps,
# its types and its opening paragraph): (the quote, setup, statements,
# what the last one answers). An answer is ("rows", first row), ("not
# rows", a first row it is not), ("columns", names), ("contains", a text
# some value holds) or ("error", SQLSTATE, a part of the message the
# document quotes).
COMPAT_GAPS = [
    ("`SELECT sum(x), sum(x::int) FROM t` fails (`duplicate unqualified field name \"sum(t.x)\"`)",
     ["CREATE TABLE t (x BIGINT)"], ["SELECT sum(x), sum(x::int) FROM t"],
     ("error", "42701", 'duplicate unqualified field name "sum(t.x)"')),
    ("`SELECT 2147483647::int + 1` answers `2147483648`", [], ["SELECT 2147483647::int + 1"],
     ("rows", (2147483648,))),
    ("`SELECT -x FROM (VALUES (-9223372036854775808)) t(x)` wraps (answers `-9223372036854775808`",
     [], ["SELECT -x FROM (VALUES (-9223372036854775808)) t(x)"], ("rows", (-9223372036854775808,))),
    ("a constant, `-(-9223372036854775808)`, fails with 22003", [], ["SELECT -(-9223372036854775808)"],
     ("error", "22003", "overflow")),
    ("`INSERT INTO nn SELECT time, 'x', v FROM (VALUES (now(), 1)) t(time, v)` fails (`Inconsistent data length "
     "across values list`)", ["CREATE TABLE nn (time TIMESTAMP NOT NULL, host TEXT NOT NULL, v BIGINT, extra TEXT)"],
     ["INSERT INTO nn SELECT time, 'x', v FROM (VALUES (now(), 1)) t(time, v)"],
     ("error", None, "Inconsistent data length across values list")),
    ("`SELECT 1 AS a, 2 AS a` returns columns `a` and `a_2`", [], ["SELECT 1 AS a, 2 AS a"],
     ("columns", ["a", "a_2"])),
    ("`pg_typeof(x)` | fails (`Invalid function 'pg_typeof'`)", [], ["SELECT pg_typeof(1)"],
     ("error", "42883", "Invalid function 'pg_typeof'")),
    ("`txid_current()` | always 1", [], ["SELECT txid_current()"], ("rows", (1,))),
    ("`time_bucket('300.000s', ts)` is unknown", [], ["SELECT time_bucket('300.000s', now())"],
     ("error", "42883", "time_bucket")),
    ("`set_config(name, value, is_local)` | returns `value` and sets nothing", [],
     ["SELECT set_config('application_name', 'changed', false)", "SELECT current_setting('application_name')"],
     ("not rows", ("changed",))),
    ("`COPY t FROM '/path'`, `COPY ... TO '/path'` | 0A000", ["CREATE TABLE t (x BIGINT)"],
     ["COPY t FROM '/tmp/sextant-docs-test'"], ("error", "0A000", "FROM STDIN")),
    ("`COPY t FROM '/path'`, `COPY ... TO '/path'` | 0A000", ["CREATE TABLE t (x BIGINT)"],
     ["COPY t TO '/tmp/sextant-docs-test'"], ("error", "0A000", "TO STDOUT")),
    ("`COPY t (...) FROM STDIN (FORMAT binary)` answers 0A000", ["CREATE TABLE t (x BIGINT)"],
     ["COPY t (x) FROM STDIN (FORMAT binary)"], ("error", "0A000", "FORMAT binary")),
    ("`BEGIN; INSERT ...; ROLLBACK` keeps the row", ["CREATE TABLE t (x BIGINT)"],
     ["BEGIN", "INSERT INTO t VALUES (1)", "ROLLBACK", "SELECT count(*) FROM t"], ("rows", (1,))),
    ('statements fail ("current transaction is aborted", 25P02', [], ["BEGIN", "SELECT nope", "SELECT 1"],
     ("error", "25P02", "current transaction is aborted")),
    ("| `EXPLAIN` of a query with a correlated subquery in its select list | the plan shows `NULL` for the subquery",
     ["CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE PRECISION)"],
     ["EXPLAIN SELECT host, (SELECT max(v) FROM m x WHERE x.host = m.host) FROM m"],
     ("contains", "Projection: m.host, NULL")),
    ("`SELECT * FROM pg_catalog.pg_indexes` fails (42P01", [], ["SELECT * FROM pg_catalog.pg_indexes"],
     ("error", "42P01", "pg_indexes")),
    ("`INSERT INTO t (time, b) VALUES (now(), '\\xdeadbeef')` stores the 10 characters",
     ["CREATE TABLE t (time TIMESTAMP NOT NULL, b BYTEA)", "INSERT INTO t (time, b) VALUES (now(), '\\xdeadbeef')"],
     ["SELECT length(b) FROM t"], ("rows", (10,))),
    ("`pg_get_userbyid(oid)` answers `postgres` for any oid", [], ["SELECT pg_get_userbyid(12345::oid)"],
     ("rows", ("postgres",))),
    ("`SELECT a, (SELECT count(*) FROM (SELECT * FROM r AS y WHERE y.b = r.b) AS x WHERE x.a < r.a) FROM r` "
     "fails (`Physical plan does not support logical expression ScalarSubquery`)",
     ["CREATE TABLE r (a INTEGER, b INTEGER, c INTEGER)", "INSERT INTO r VALUES (1, 1, 0), (2, 1, 0), (3, 2, 0)"],
     ["SELECT a, (SELECT count(*) FROM (SELECT * FROM r AS y WHERE y.b = r.b) AS x WHERE x.a < r.a) FROM r"],
     ("error", None, "Physical plan does not support logical expression ScalarSubquery")),
    ("so does a non-equality correlated subquery over an outer query with `random()` or `LIMIT`",
     ["CREATE TABLE r (a INTEGER, b INTEGER, c INTEGER)", "INSERT INTO r VALUES (1, 1, 0), (2, 1, 0), (3, 2, 0)"],
     ["SELECT v, (SELECT count(*) FROM r AS x WHERE x.a < s.v) FROM "
      "(SELECT a + CAST(floor(random() * 10) AS INT) AS v FROM r) AS s"],
     ("error", None, "Physical plan does not support logical expression ScalarSubquery")),
    # (the Types table and the opening paragraph)
    ("`1.25::numeric` reads back as `1.2500000000`", [], ["SELECT (1.25::numeric)::text"],
     ("rows", ("1.2500000000",))),
    ("`version()` is `PostgreSQL 16.6 (Sextant 0.1.0) on x86_64-linux, compiled by rustc, 64-bit`", [],
     ["SELECT version()"], ("rows", ("PostgreSQL 16.6 (Sextant 0.1.0) on x86_64-linux, compiled by rustc, 64-bit",))),
    ("`server_version` is `16.6 (Sextant 0.1.0)`", [], ["SHOW server_version"], ("rows", ("16.6 (Sextant 0.1.0)",))),
]


def test_aborted_transaction_is_25p01_on_the_extended_protocol(tmp_path):
    """docs/postgres-compat.md: after an error inside BEGIN, a statement
    with parameters (the extended protocol) fails 25P01."""
    assert "25P02; 25P01 on the extended protocol" in (ROOT / "docs/postgres-compat.md").read_text()
    server = started(tmp_path)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT nope")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT %s::int", [1])
        assert err.value.sqlstate == "25P01", (err.value.sqlstate, str(err.value))
        conn.execute("ROLLBACK")
        assert conn.execute("SELECT %s::int", [1]).fetchone() == (1,)


@pytest.mark.parametrize("quote,setup,statements,answer", COMPAT_GAPS,
                         ids=[g[2][-1][:40] for g in COMPAT_GAPS])
def test_gaps_quoted_in_postgres_compat(tmp_path, quote, setup, statements, answer):
    text = prose("docs/postgres-compat.md")
    assert quote in text, quote
    server = started(tmp_path)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for sql in setup:
            conn.execute(sql)
        for sql in statements[:-1]:
            try:
                conn.execute(sql)
            except psycopg.Error:
                pass
        last = statements[-1]
        if answer[0] == "error":
            with pytest.raises(psycopg.Error) as err:
                conn.execute(last)
            if answer[1]:
                assert err.value.sqlstate == answer[1], (last, err.value.sqlstate, str(err.value))
            assert answer[2] in str(err.value), (last, str(err.value))
        else:
            cur = conn.execute(last)
            if answer[0] == "columns":
                assert [d.name for d in cur.description] == answer[1], last
            elif answer[0] == "rows":
                assert cur.fetchone() == answer[1], last
            elif answer[0] == "contains":
                rows = cur.fetchall()
                assert any(answer[1] in str(v) for row in rows for v in row), (last, rows)
            else:
                assert cur.fetchone() != answer[1], last
    assert server.proc.poll() is None


# Errors docs/ingest.md quotes for writes that meet a table: (the quote,
# SQL setup, path, content type, body, status).
INGEST_TABLE_ERRORS = [
    ('column "v" of table "m" is Int32, but this value is bigint',
     ["CREATE TABLE m (time TIMESTAMP NOT NULL, v INT)"], "/api/v2/write", "text/plain", b"m v=1i", 400),
    ('column "severity_number" of table "otel_logs" is Int64, but this write has Int32; values are never cast '
     'silently', ["CREATE TABLE otel_logs (time TIMESTAMP NOT NULL, severity_number BIGINT)"], "/v1/logs",
     "application/json",
     b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1767225600000000000",'
     b'"severityNumber":9,"body":{"stringValue":"x"}}]}]}]}', 400),
    ("line 2: element 1: expected a JSON object, got a string", [], "/v1/ingest/events?precision=s",
     "application/json", b'[{"time": 1, "svc": "a"}, "x"]', 400),
]


@pytest.mark.parametrize("quote,setup,path,content_type,body,status", INGEST_TABLE_ERRORS,
                         ids=[e[2] for e in INGEST_TABLE_ERRORS])
def test_table_errors_quoted_in_ingest(tmp_path, quote, setup, path, content_type, body, status):
    text = prose("docs/ingest.md")
    assert quote in text, quote
    server = started(tmp_path)
    run_sql(server, setup)
    got_status, _, got = server.post(path, body, {"Content-Type": content_type})
    answer = json.loads(got)
    message = answer.get("error", answer.get("message"))
    assert (got_status, quote in message) == (status, True), (got_status, message)


def test_health_answers_as_quoted(tmp_path):
    import urllib.request
    quote = '`GET /health` on the HTTP address answers `200 {"status":"ok","version":"0.1.0"}`'
    assert quote in (ROOT / "docs/ingest.md").read_text(), quote
    server = started(tmp_path)
    with urllib.request.urlopen(f"http://{server.addrs['http']}/health", timeout=10) as r:
        assert (r.status, r.read().decode()) == (200, '{"status":"ok","version":"0.1.0"}')


def test_remote_write_answer_quoted_in_ingest(tmp_path):
    """docs/ingest.md's remote-write 400 is the exact answer to the five
    series its list of reasons describes (the good one first)."""
    from remote_write import pb_series, snappy, write_request
    text = (ROOT / "docs/ingest.md").read_text()
    quoted = [line for line in text.splitlines() if line.startswith('{"error":"4 series rejected')]
    assert len(quoted) == 1, quoted
    now_ms = 1767225600000
    body = snappy(write_request(
        pb_series([("__name__", "rw_demo"), ("job", "api")], [(1.0, now_ms)]),
        pb_series([("job", "nameless")], [(2.0, now_ms)]),
        pb_series([("__name__", "rw_demo"), ("value", "x")], [(3.0, now_ms)]),
        pb_series([("__name__", "rw_demo"), ("a-b", "x")], [(4.0, now_ms), (5.0, now_ms + 1000)]),
        pb_series([("__name__", "rw_demo")], [(6.0, 100000000000000000)]),
    ))
    server = started(tmp_path)
    status, _, got = server.post("/api/v1/write", body, {
        "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0"})
    got = got.decode() if isinstance(got, bytes) else got
    assert (status, got) == (400, quoted[0]), got


def test_enum_names_are_refused_as_ingest_says(tmp_path):
    """docs/ingest.md: OTLP JSON enums must be numbers ("SPAN_KIND_SERVER"
    is refused, 400 INVALID_ARGUMENT); the number is accepted."""
    text = prose("docs/ingest.md")
    assert '(`"SPAN_KIND_SERVER"` is refused)' in text
    server = started(tmp_path)
    span = ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",'
            '"spanId":"eee19b7ec3c1b174","name":"x","kind":%s,"startTimeUnixNano":"1767225600000000000",'
            '"endTimeUnixNano":"1767225601000000000"}]}]}]}')
    status, _, body = server.post("/v1/traces", (span % '"SPAN_KIND_SERVER"').encode(),
                                  {"Content-Type": "application/json"})
    answer = json.loads(body)
    assert (status, answer["code"]) == (400, 3), body
    assert 'invalid type: string "SPAN_KIND_SERVER", expected i32' in answer["message"], body
    status, _, body = server.post("/v1/traces", (span % "2").encode(), {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {}), body


def test_string_doubles_answer_as_otel_schema_says(tmp_path):
    """docs/otel-schema.md: a double sent as a JSON string refuses a log
    request (400), and makes a metric count as rejected (partialSuccess)."""
    text = prose("docs/otel-schema.md")
    refused = 'body is not a valid OTLP JSON message: invalid type: string "NaN", expected f64'
    lost = 'has no data (gauge, sum, histogram, exponential histogram or summary), or data that could not be decoded'
    assert refused in text and 'metric "…" has no data (…), or data that could not be decoded' in text
    server = started(tmp_path)
    logs = ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1767225600000000000",'
            '"body":{"stringValue":"x"},"attributes":[{"key":"ratio","value":{"doubleValue":"NaN"}}]}]}]}]}')
    status, _, body = server.post("/v1/logs", logs.encode(), {"Content-Type": "application/json"})
    answer = json.loads(body)
    # (the decoder adds where: " at line 1 column 169")
    assert (status, answer["code"], answer["message"].startswith(refused + " at line 1 column ")) == (
        400, 3, True), body
    metrics = ('{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"lat","histogram":{'
               '"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"1767225600000000000","count":"1",'
               '"sum":"NaN","bucketCounts":["1"],"explicitBounds":[]}]}}]}]}]}')
    status, _, body = server.post("/v1/metrics", metrics.encode(), {"Content-Type": "application/json"})
    answer = json.loads(body)
    assert status == 200 and answer["partialSuccess"]["rejectedDataPoints"] == "1", body
    assert answer["partialSuccess"]["errorMessage"] == f'1 rejected: metric "lat" {lost}', body
    # A gauge's "asDouble": "NaN" is stored as NULL.
    assert 'a gauge or sum `"asDouble": "NaN"` (and an exemplar\'s) is stored as NULL' in text
    gauge = ('{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"temp","gauge":{"dataPoints":['
             '{"timeUnixNano":"1767225600000000000","asDouble":"NaN"}]}}]}]}]}')
    status, _, body = server.post("/v1/metrics", gauge.encode(), {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {}), body
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT value, value_int FROM otel_metrics_gauge WHERE metric_name = 'temp'"
                            ).fetchall() == [(None, None)]


@pytest.mark.parametrize("doc,rows_after", [("docs/flight-sql.md", 3), ("README.md", 2)])
def test_flight_sql_python_example_runs(tmp_path, doc, rows_after):
    """The Python (ADBC) block of docs/flight-sql.md and of README.md runs
    as written, on a server at the address it names (the test server's
    instead) with a `cpu` table holding one row of web-1."""
    blocks = code_blocks((ROOT / doc).read_text(), "python")
    assert len(blocks) == 1, blocks
    server = started(tmp_path)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)")
        conn.execute("INSERT INTO cpu VALUES (now(), 'web-1', 42.5)")
    code = blocks[0].replace("grpc://127.0.0.1:8815", f"grpc://{server.addrs['flight']}")
    assert code != blocks[0]
    scope = {}
    exec(compile(code, doc, "exec"), scope)
    assert scope["table"].num_rows == 1, scope["table"]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM cpu").fetchone() == (rows_after,)


def test_readme_curl_writes_are_acknowledged(tmp_path):
    """README.md's two curl writes (line protocol, JSON) are acknowledged
    (204, 200) and their rows are there."""
    import subprocess
    blocks = [b for b in code_blocks((ROOT / "README.md").read_text(), "sh") if "curl" in b]
    assert len(blocks) == 1, blocks
    curls = [line for line in blocks[0].splitlines() if line.startswith("curl ")]
    assert len(curls) == 2, curls
    server = started(tmp_path)
    for command, status in zip(curls, ("204", "200")):
        command = command.replace("http://127.0.0.1:4318", f"http://{server.addrs['http']}")
        got = subprocess.run(command + " -s -o /dev/null -w '%{http_code}'", shell=True,
                             capture_output=True, text=True, timeout=30)
        assert got.stdout == status, (command, got.stdout, got.stderr)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT host, usage, cores FROM cpu").fetchall() == [("web-1", 42.5, 8)]
        assert conn.execute("SELECT svc FROM events").fetchall() == [("api",)]



def test_readme_quickstart_in_psql(tmp_path):
    """README.md's quickstart: its psql command (this server's address in
    place of 127.0.0.1:5433, the machine's user name, psql's defaults)
    reads the quickstart's SQL block and answers as PostgreSQL's psql does."""
    import getpass
    import shlex
    import subprocess

    readme = (ROOT / "README.md").read_text()
    commands = [b for b in code_blocks(readme, "sh") if b.startswith("psql ")]
    assert len(commands) == 1, commands
    words = shlex.split(commands[0])
    assert words[words.index("-h") + 1] == "127.0.0.1" and words[words.index("-p") + 1] == "5433", words
    server = started(tmp_path)
    host, port = server.pg
    words[words.index("-h") + 1], words[words.index("-p") + 1] = host, str(port)
    sql = sql_blocks(readme)[0]
    assert sql.startswith("CREATE TABLE cpu"), sql
    out = subprocess.run(words + ["-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", (getpass.getuser(), out.stdout, out.stderr)
    lines = [line.rstrip() for line in out.stdout.splitlines()]
    assert lines[:2] == ["CREATE TABLE", "INSERT 0 2"], out.stdout
    header = lines.index("         minute         | host  | avg")
    # Both rows fall in one minute (or, at a minute's turn, two): their
    # order is not defined.
    rows = sorted(lines[header + 2:header + 4])
    assert re.fullmatch(r" \d{4}-\d\d-\d\d \d\d:\d\d:00\+00 \| web-1 \| 42\.5", rows[0]), out.stdout
    assert re.fullmatch(r" \d{4}-\d\d-\d\d \d\d:\d\d:00\+00 \| web-2 \|   17", rows[1]), out.stdout
    assert lines[header + 4] == "(2 rows)" and "FLUSH 1" in lines, out.stdout
    files = next(i for i, line in enumerate(lines) if re.fullmatch(r" table_name \| +path +\| rows", line))
    assert re.fullmatch(r" cpu        \| cpu/\d{8}T\d{4}/\d{20}-\d{4}\.parquet \|    2", lines[files + 2]), out.stdout
    assert lines[files + 3] == "(1 row)", out.stdout

def test_native_histograms_are_rejected_as_ingest_says(tmp_path):
    """docs/ingest.md: a series with only native histogram samples is
    rejected, with the reason it quotes; the other series are written."""
    from remote_write import field_bytes, pb_series, snappy, write_request
    reason = "native histograms are not supported yet; send classic histograms"
    assert reason in prose("docs/ingest.md")
    # prometheus.TimeSeries.histograms = 4 (a Histogram: count_int = 1, timestamp = 15).
    histogram = field_bytes(4, b"\x08\x05" + b"\x78" + b"\x80\xa0\xcb\xd9\xb8\x33")
    body = snappy(write_request(
        pb_series([("__name__", "native_latency")], []) + histogram,
        pb_series([("__name__", "classic_total")], [(1.0, 1767225600000)]),
    ))
    server = started(tmp_path)
    status, _, got = server.post("/api/v1/write", body, {
        "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    message = json.loads(got)["error"]
    assert status == 400 and f'series 1: metric "native_latency": {reason}' in message, (status, got)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT value FROM classic_total").fetchall() == [(1.0,)]


def test_span_events_links_and_exemplars_read_as_otel_schema_shows(tmp_path):
    """docs/otel-schema.md's samples of an event, a link and an exemplar
    are the JSON text Sextant stores for them."""
    import datetime as dt
    samples = [b.strip() for b in code_blocks((ROOT / "docs/otel-schema.md").read_text(), "json")]
    event = next(b for b in samples if b.startswith('{"time":"2026-11-22'))
    link = next(b for b in samples if b.startswith('{"trace_id"'))
    exemplar = next(b for b in samples if b.startswith('{"time":"2023-11-14'))
    at = dt.datetime(2026, 11, 22, 7, 33, tzinfo=dt.timezone.utc)
    event_ns = int(at.timestamp()) * 10**9 + 215_000_000
    span = {
        "traceId": TRACE, "spanId": "eee19b7ec3c1b174", "name": "pay", "kind": 2,
        "startTimeUnixNano": str(event_ns - 1000), "endTimeUnixNano": str(event_ns + 1000),
        "events": [{"timeUnixNano": str(event_ns), "name": "exception",
                    "attributes": [{"key": "exception.type", "value": {"stringValue": "CardDeclined"}}]}],
        "links": [{"traceId": TRACE, "spanId": "2000000000000003", "traceState": "a=b", "flags": 1,
                   "attributes": [{"key": "messaging.operation", "value": {"stringValue": "process"}}]}],
    }
    gauge = {"name": "queue_depth", "gauge": {"dataPoints": [{
        "timeUnixNano": "1700000000000000002", "asDouble": 7,
        "exemplars": [{"timeUnixNano": "1700000000000000002", "asDouble": 3.25, "traceId": TRACE,
                       "spanId": "eee19b7ec3c1b174",
                       "filteredAttributes": [{"key": "user", "value": {"stringValue": "u1"}}]}]}]}}
    server = started(tmp_path)
    for path, body in (("/v1/traces", {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}),
                       ("/v1/metrics", {"resourceMetrics": [{"scopeMetrics": [{"metrics": [gauge]}]}]})):
        status, _, answer = server.post(path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        assert (status, json.loads(answer)) == (200, {}), answer
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT events, links FROM otel_traces").fetchone() == (f"[{event}]", f"[{link}]")
        assert conn.execute("SELECT exemplars FROM otel_metrics_gauge").fetchone() == (f"[{exemplar}]",)


def test_session_gaps_quoted_in_postgres_compat(tmp_path):
    """Three gaps of docs/postgres-compat.md that need a session, a binary
    cursor or SQLAlchemy: ROLLBACK TO SAVEPOINT keeps the aborted state; an
    untyped parameter comes back as raw bytes typed unknown; SQLAlchemy's
    key reflection fails on unnest()."""
    import sqlalchemy as sa
    text = prose("docs/postgres-compat.md")
    for quote in ("`ROLLBACK TO SAVEPOINT` does not clear that state",
                  "the value comes back as raw bytes, typed `unknown` (oid 705)",
                  "fails (`unnest() can only be applied to array`)"):
        assert quote in text, quote
    server = started(tmp_path)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT)")
        conn.execute("BEGIN")
        conn.execute("SAVEPOINT s")
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT nope")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT 1")
        assert err.value.sqlstate == "25P02", err.value.sqlstate
        conn.execute("ROLLBACK")
        cur = conn.cursor(binary=True)
        cur.execute("SELECT %s", ["x"])
        assert (cur.fetchone(), cur.description[0].type_code) == ((b"x",), 705)
    engine = sa.create_engine(f"postgresql+psycopg://sextant@{server.addrs['pg']}/sextant")
    try:
        with pytest.raises(sa.exc.DBAPIError) as err:
            sa.inspect(engine).get_pk_constraint("cpu")
        assert "unnest() can only be applied to array" in str(err.value), str(err.value)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------
# Every other fenced block of README.md and docs/ (commands, configuration,
# quoted answers and outputs): the test that runs it or compares it, or why
# none does. A new block fails this test until it is given one.

NOT_RUN = "not run: "
RELEASE = ("a release build (about 30 minutes cold on this 2-core machine) does not fit the CI budget, "
           "and CI never builds debug and release both")
BLOCK_TESTS = {
    ("docs/promql.md", '{"status":"success","data":{"go_goroutines"'): (
        "test_promql::test_prometheus_scraping_itself_into_sextant_answers_as_prometheus"
    ),
    ("README.md", "cargo run --release -- serve"): NOT_RUN + RELEASE + "; every test starts the same "
        "binary built for debug, and `tests/run-all.sh` is what .ci/run runs",
    ("README.md", "psql -h 127.0.0.1"): "test_docs_blocks::test_readme_quickstart_in_psql",
    ("README.md", "import adbc_driver_flightsql"): "test_docs_blocks::test_flight_sql_python_example_runs",
    ("README.md", "curl --data-binary"): "test_docs_blocks::test_readme_curl_writes_are_acknowledged "
        "test_otel_sdk::test_environment_of_ingest_md_is_all_an_sdk_needs",
    ("docs/alerts.md", "{"): "tests/e2e/alerts.rs::documented_notification",
    ("docs/benchmarks.md", "benches/run.sh"): NOT_RUN + RELEASE + "; the figures in the document are its output",
    ("docs/benchmarks.md", "sextant-load --logs"): NOT_RUN + RELEASE,
    ("docs/benchmarks.md", "target/release/sextant-load --scenario promql"): NOT_RUN + RELEASE
        + "; the figures below it are its output",
    ("docs/cluster.md", "export SEXTANT_CATALOG="): NOT_RUN + "fixed ports and directories under /var/lib; "
        "tests/e2e/cluster.rs starts the same three nodes with the same flags (ports the system picks, "
        "temporary directories) on a real PostgreSQL 15",
    ("docs/cluster.md", "┌───── DistributedExec"):
        "tests/e2e/cluster.rs::a_distributed_aggregate_answers_as_the_single_node_plan",
    ("docs/durability.md", "power-loss test (--wal-sync always)"):
        "tests/e2e/power.rs::durability_md_quotes_the_power_loss_summaries",
    ("docs/durability.md", "power-loss test on a PostgreSQL catalog"):
        "tests/e2e/power.rs::durability_md_quotes_the_power_loss_summaries",
    ("docs/durability.md", "WARN sextant_server: no catalog here"):
        "test_s3::test_a_new_node_restores_the_catalog_from_the_bucket",
    ("docs/flight-sql.md", "import datetime"): "test_docs_blocks::test_flight_sql_python_example_runs",
    ("docs/ingest.md", "$ curl -i --data-binary @big.txt"): "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/ingest.md", "HTTP/1.1 503"): "test_bad_input::test_backpressure_refuses_with_retry_and_loses_nothing",
    ("docs/ingest.md", "OTEL_EXPORTER_OTLP_ENDPOINT"): "test_otel_sdk::test_environment_of_ingest_md_is_all_an_sdk_needs",
    ("docs/ingest.md", "$ # spans.json"): "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/ingest.md", "$ curl -i -H 'Content-Type: application/json'"):
        "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/ingest.md", "$ curl -i --data-binary 'cpu,"): "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/ingest.md", 'Table "public.cpu"'): "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/ingest.md", "remote_write:"): "test_prometheus::test_prometheus_remote_write",
    ("docs/ingest.md", 'Table "public.http_requests_total"'):
        "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/ingest.md", "HTTP/1.1 400 Bad Request"): "test_docs_blocks::test_remote_write_answer_quoted_in_ingest",
    ("docs/ingest.md", "$ curl -i --data-binary '{"): "test_docs_blocks::test_every_curl_example_answers_as_quoted",
    ("docs/observability.md", "scrape_configs:"): "test_observability::test_prometheus_scrapes_sextant",
    ("docs/observability.md", 'RUSTFLAGS="--cfg tokio_unstable"'): NOT_RUN + RELEASE + " (and the feature "
        "and `--cfg tokio_unstable` rebuild every crate again): tests/console.sh checks it by hand",
    ("docs/otel-schema.md", '{"time":"2026-11-22'):
        "test_docs_blocks::test_span_events_links_and_exemplars_read_as_otel_schema_shows",
    ("docs/otel-schema.md", '{"trace_id"'):
        "test_docs_blocks::test_span_events_links_and_exemplars_read_as_otel_schema_shows",
    ("docs/otel-schema.md", '{"time":"2023-11-14'):
        "test_docs_blocks::test_span_events_links_and_exemplars_read_as_otel_schema_shows",
    ("docs/otel-schema.md", '{"partialSuccess"'): "test_docs_blocks::test_otel_schema_partial_success_sample",
    ("docs/storage.md", "AWS_ENDPOINT_URL="): "test_s3::test_storage_md_command_runs_on_s3",
    ("docs/storage.md", "files_opened=1, ..."): "tests/e2e/lifecycle.rs::a_trace_id_lookup_skips_row_groups_by_bloom_filter",
    ("docs/storage.md", "DedupExec: key=[host, time], merge=last_row"):
        "tests/e2e/keys.rs::explain_shows_the_merge_until_compaction",
}
# The printed answers of the `-- example:` queries (psql's output).
EXAMPLE_OUTPUT = "test_docs_queries::test_documented_outputs_are_what_psql_prints"


def fenced_blocks(text: str):
    """(language, first line) of every fenced block, indented ones included."""
    out, current, lang = [], None, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if current is None:
                current, lang = [], stripped[3:].strip()
            else:
                out.append((lang, current[0] if current else ""))
                current = None
        elif current is not None:
            current.append(stripped)
    return out


def test_every_block_is_run_by_a_test_or_says_why_not():
    import importlib
    from test_docs_queries import documented_outputs

    outputs = [o.splitlines()[0].strip() for o in documented_outputs().values()]
    used, unmatched = set(), []
    for doc in ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]:
        for lang, first in fenced_blocks((ROOT / doc).read_text()):
            if lang == "sql":
                continue  # test_every_runnable_sql_block_runs and test_docs_queries
            keys = [k for k in BLOCK_TESTS if k[0] == doc and first.startswith(k[1])]
            if not keys and lang == "" and first in outputs:
                keys = [EXAMPLE_OUTPUT]
            if len(keys) != 1:
                unmatched.append(f"{doc}: ```{lang} {first!r} matches {keys}")
            used.update(keys)
    assert not unmatched, "blocks without exactly one entry in BLOCK_TESTS:\n" + "\n".join(unmatched)
    assert set(BLOCK_TESTS) <= used, f"entries without their block: {set(BLOCK_TESTS) - used}"
    for (doc, _), where in [*BLOCK_TESTS.items(), (("docs/", ""), EXAMPLE_OUTPUT)]:
        if where.startswith(NOT_RUN):
            continue
        for test in where.split():
            path, name = test.split("::")
            if path.endswith(".rs"):
                source = (ROOT / path).read_text()
                assert f"fn {name}(" in source, test
            else:
                module = importlib.import_module(path)
                assert callable(getattr(module, name, None)), test
                source = Path(module.__file__).read_text()
            assert doc in source, f"{test} does not read {doc}"
