"""Every runnable ```sql block of README.md and docs/ runs, in document
order, on a real server (test_docs_queries.py checks the answers of the
blocks marked `-- example:` in docs/otel-schema.md and docs/ingest.md).

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
    "docs/security.md": (1, 2, []),
    "docs/storage.md": (2, 0, ["CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)"]),
    "docs/views.md": (3, 0, [
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)",
        "INSERT INTO cpu VALUES (now(), 'web-1', 42.5)",
        "CREATE TABLE teams (host TEXT, team TEXT)",
        "CREATE TABLE hosts (host TEXT, team TEXT)",
    ]),
}

SYNOPSIS = re.compile(r"\[(?!\d+\])[^\]]*\]|<[a-z][^>]*>|\{[^}]*\|[^}]*\}|\.\.\.|\$__")


def is_synopsis(statement: str) -> bool:
    """Grammar outside string literals (`'E[0-9]+'` is a regex, not a
    choice) and array subscripts (`[1]`)."""
    return bool(SYNOPSIS.search(re.sub(r"'(?:[^']|'')*'", "''", statement)))


def sql_blocks(text: str):
    return re.findall(r"^```sql\n(.*?)^```", text, flags=re.S | re.M)


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
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data)
    server.start()
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
