"""Sextant answers as PostgreSQL 15 answers: a corpus of statements (issue
#25's items and the text forms of the types) runs on a real PostgreSQL 15
(tests/python/postgres_reference.py) and on Sextant, over pgwire (psycopg,
text format: the exact text of every value, the column names and the
SQLSTATE of every error) and over Flight SQL (ADBC: the values, and that an
error is an error). The expected answers are PostgreSQL's, never Sextant's.

A statement whose answer differs must be listed in KNOWN_DIFFERENCES with
the reason, and that statement must be quoted in docs/postgres-compat.md;
a listed statement that agrees fails the test too, so the list and the
document cannot go stale. The counts are printed (pytest -s shows them).
"""

import datetime as dt
import decimal
import json
import math
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pytest
from postgres_reference import PG_BIN, Postgres

ROOT = Path(__file__).resolve().parents[2]

SETUP = [
    "CREATE TABLE cpu (time TIMESTAMPTZ NOT NULL, host TEXT, usage DOUBLE PRECISION, bytes BIGINT, cores INT)",
    "INSERT INTO cpu VALUES "
    "('2026-01-01 00:00:00+00', 'a', 1.5, 9223372036854775807, 4), "
    "('2026-01-01 00:00:30.25+00', 'a', 2, 1, 4), "
    "('2026-01-01 00:02:00+00', 'b', 0, 3000000000, 2147483647), "
    "('2026-01-01 00:02:10+00', 'b', 1e300, NULL, NULL), "
    "('2026-01-01 00:03:00+00', 'c', NULL, 5, 8)",
    # Fewer values than columns: the rest are NULL.
    "INSERT INTO cpu VALUES ('2026-01-01 00:04:00+00', 'd')",
]

CORPUS = [
    # Wrong answers with no error, in issue #25.
    "SELECT sum(x) FROM (VALUES (9223372036854775807::bigint), (1::bigint)) t(x)",
    "SELECT host, sum(bytes) FROM cpu GROUP BY host ORDER BY host",
    "SELECT 3000000000::bigint * 4000000000::bigint",
    "SELECT bytes * 4 FROM cpu ORDER BY time",
    "SELECT cores + cores FROM cpu ORDER BY time",
    "SELECT 2147483647::int + 1",
    "SELECT usage / 0 FROM cpu ORDER BY time",
    "SELECT usage * 1e10 FROM cpu ORDER BY time",
    "SELECT 1.5::float8 / 0",
    "SELECT 1e400",
    "SELECT to_char(TIMESTAMPTZ '2026-01-02 03:04:05+00', 'YYYY-MM-DD HH24:MI')",
    "SELECT to_char(time, 'FMMonth DDth, HH12:MI AM') FROM cpu ORDER BY time",
    "SELECT to_timestamp('2026-01-02 03:04', 'YYYY-MM-DD HH24:MI')",
    "SELECT to_date('2026-01-02', 'YYYY-MM-DD')",
    # Values as text.
    "SELECT time, usage FROM cpu ORDER BY time",
    "SELECT time::varchar AS v, time::text AS t FROM cpu ORDER BY time",
    "SELECT 'at ' || time FROM cpu ORDER BY time LIMIT 2",
    "SELECT 2.0::float8 AS a, 0.5::float8 AS b, 1e20::float8 AS c, 1.5e-7::float8 AS d, 0.1::float4 AS e",
    "SELECT ARRAY[0::float8, 5.0] AS a, ARRAY[1, 2] AS b",
    "SELECT 'inf'::float8 AS a, '-inf'::float8 AS b, 'nan'::float8 AS c",
    "SELECT interval '90 days' AS a, interval '1 hour 30 minutes' AS b, interval '1 day 2 hours' AS c",
    "SELECT interval '90 days'::text",
    "SELECT TIMESTAMPTZ '2026-01-01 00:00:00.5+00', TIMESTAMP '2026-01-01 12:00:00'",
    "SELECT DATE '2026-03-04', true, false, NULL::text",
    "SELECT 1.25::numeric(10,2)",
    # SQL an engineer types in an incident.
    "SELECT now() - 2 * interval '1 hour' < now() - interval '119 minutes'",
    "SELECT interval '1 hour' * 2",
    "SELECT interval '1 month 1 day 1 hour' * 1.5",
    "SELECT interval '1 day' / 3",
    "SELECT time - cores * interval '1 second' FROM cpu WHERE cores IS NOT NULL ORDER BY time",
    "SELECT count(*) FROM generate_series(timestamptz '2026-01-01 00:00', timestamptz '2026-01-01 01:00', interval '1 minute')",
    "SELECT m.minute, count(cpu.usage) FROM generate_series(timestamptz '2026-01-01 00:00', "
    "timestamptz '2026-01-01 00:05', interval '1 minute') AS m(minute) LEFT JOIN cpu "
    "ON date_trunc('minute', cpu.time) = m.minute GROUP BY m.minute ORDER BY m.minute",
    "SELECT count(*) FROM cpu WHERE time > '2026-01-01 00:01'",
    "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY usage) FROM cpu",
    "SELECT host, percentile_disc(0.9) WITHIN GROUP (ORDER BY time) FROM cpu GROUP BY host ORDER BY host",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY usage) FROM cpu WHERE usage < 100",
    "SELECT percentile_cont(ARRAY[0.25, 0.5, 0.9]) WITHIN GROUP (ORDER BY usage) FROM cpu WHERE usage < 100",
    "SELECT mode() WITHIN GROUP (ORDER BY host) FROM cpu",
    "SELECT variance(usage), var_samp(usage), var_pop(usage) FROM cpu WHERE usage < 100",
    "SELECT width_bucket(usage, 0, 2, 4) FROM cpu WHERE usage < 100 ORDER BY time",
    "SELECT pg_sleep(0.05)",
    "SELECT host, cores, usage FROM cpu WHERE host = 'd'",
    "SELECT date_trunc('minute', time) AS minute, count(*) FROM cpu GROUP BY 1 ORDER BY 1",
    "SELECT host, max(usage) FROM cpu GROUP BY host HAVING max(usage) > 1 ORDER BY host",
    "SELECT host, avg(usage) FROM cpu WHERE usage < 100 GROUP BY host ORDER BY host",
    "SELECT count(DISTINCT host) FROM cpu",
    "SELECT host, lag(usage) OVER (PARTITION BY host ORDER BY time) FROM cpu ORDER BY time",
    "SELECT coalesce(usage, -1) FROM cpu ORDER BY time",
    "SELECT CASE WHEN usage > 1 THEN 'high' ELSE 'low' END FROM cpu ORDER BY time",
    "SELECT upper(host), length(host), host || '!' FROM cpu ORDER BY time LIMIT 1",
    "SELECT extract(epoch FROM time) FROM cpu ORDER BY time LIMIT 2",
    # JSON: -> answers jsonb (its text laid out as PostgreSQL prints it).
    "SELECT '{\"route\": \"/cart\", \"user\": {\"id\": 7, \"roles\": [\"a\",\"b\"]}}'::jsonb -> 'user' AS u",
    "SELECT '{\"route\": \"/cart\"}'::jsonb -> 'route' AS r, '{\"route\": \"/cart\"}'::jsonb ->> 'route' AS t",
    # Tables that are not time series.
    "CREATE TABLE hosts (host TEXT, team TEXT)",
    "INSERT INTO hosts VALUES ('a', 'web'), ('b', 'db'), ('c', NULL)",
    "SELECT h.team, count(*), max(c.usage) FROM cpu c JOIN hosts h ON c.host = h.host GROUP BY h.team ORDER BY h.team",
    "SELECT c.host, h.team FROM cpu c LEFT JOIN hosts h USING (host) ORDER BY c.time",
    "SELECT * FROM hosts ORDER BY host",
    "CREATE VIEW busy AS SELECT host, usage FROM cpu WHERE usage > 1",
    "SELECT * FROM busy ORDER BY host, usage",
    "CREATE VIEW by_team AS SELECT h.team, count(*) AS n FROM cpu c JOIN hosts h ON c.host = h.host GROUP BY h.team",
    "SELECT * FROM by_team ORDER BY team",
    # Errors: the SQLSTATE must be PostgreSQL's.
    "SELECT * FROM nope",
    "SELECT nope FROM cpu",
    "SELECT 1 +",
    "SELECT 1/0",
    "SELECT 'x'::int",
    "SELECT percentile_disc(1.5) WITHIN GROUP (ORDER BY usage) FROM cpu",
    "SELECT interval '1 hour' / 0",
    "SELECT no_such_function(1)",
    "INSERT INTO cpu VALUES ('2026-01-01 00:05:00+00', 'e', 1, 2, 3, 4)",
]

# Statements whose answers differ, with the reason (each quoted in
# docs/postgres-compat.md, "Gaps").
KNOWN_DIFFERENCES = {
    "SELECT 2147483647::int + 1": "integer literals are bigint in DataFusion",
    "SELECT 1e400": "refused: DataFusion reads it as double precision, PostgreSQL as numeric",
    "SELECT extract(epoch FROM time) FROM cpu ORDER BY time LIMIT 2": "extract is double precision, not numeric",
    "SELECT DATE '2026-03-04', true, false, NULL::text": "duplicate output names get a suffix",
    "SELECT time::varchar AS v, time::text AS t FROM cpu ORDER BY time": "varchar is described as text",
    "SELECT ARRAY[0::float8, 5.0] AS a, ARRAY[1, 2] AS b": "integer literals are bigint: bigint[]",
    "SELECT pg_sleep(0.05)": "void is described as text",
}


def pg_answer(conn, sql):
    """(column names, rows as PostgreSQL's text, rows as Python values) or
    ("error", SQLSTATE)."""
    try:
        cur = conn.execute(sql)
    except psycopg.Error as e:
        return ("error", e.sqlstate)
    if cur.description is None:
        return ("ok", cur.statusmessage.split()[0] if cur.statusmessage else "")
    res = cur.pgresult
    text = [
        tuple(None if res.get_value(r, c) is None else res.get_value(r, c).decode() for c in range(res.nfields))
        for r in range(res.ntuples)
    ]
    return ([d.name for d in cur.description], text, cur.fetchall())


def types(conn, sql):
    """The type OIDs of a query's columns, as the server describes them."""
    return [d.type_code for d in conn.execute(sql).description]


def flight_answer(cur, sql):
    try:
        cur.execute(sql)
        if cur.description is None:
            return ("ok",)
        return ("rows", cur.fetchall())
    except Exception as e:  # the ADBC error classes differ by driver
        return ("error", type(e).__name__)


def same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dt.timedelta) or isinstance(b, dt.timedelta):
        return interval(a) == interval(b)
    if isinstance(a, (int, float, decimal.Decimal)) and isinstance(b, (int, float, decimal.Decimal)):
        fa, fb = float(a), float(b)
        # A real arrives over Flight SQL as the float32 itself (0.1 is
        # 0.10000000149011612); psycopg reads PostgreSQL's shortest text.
        return (math.isnan(fa) and math.isnan(fb)) or fa == fb or math.isclose(fa, fb, rel_tol=1e-7)
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return a.replace(tzinfo=a.tzinfo or dt.timezone.utc) == b.replace(tzinfo=b.tzinfo or dt.timezone.utc)
    return a == b


def interval(v):
    """A timedelta, or pyarrow's MonthDayNano (months as 30 days, as psycopg reads them)."""
    if isinstance(v, dt.timedelta):
        return v
    months, days, nanos = v.months, v.days, v.nanoseconds
    return dt.timedelta(days=30 * months + days, microseconds=nanos // 1000)


JSON_OIDS = (114, 3802)


def same_flight(pg, fl, pg_types=()) -> bool:
    if pg[0] == "error" or fl[0] == "error":
        return pg[0] == fl[0]
    if pg[0] == "ok":
        return fl[0] == "ok" or (fl[0] == "rows" and len(fl[1]) <= 1)
    rows = pg[2]
    if fl[0] != "rows" or len(rows) != len(fl[1]):
        return False
    # Flight SQL carries json/jsonb as its text; psycopg parses it.
    got = [[json.loads(v) if t in JSON_OIDS and isinstance(v, str) else v
            for v, t in zip(r, list(pg_types) + [None] * len(r))] for r in fl[1]]
    return all(same_value(list(a), b) for a, b in zip(rows, got))


@pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15 server binaries are not installed")
def test_statements_answer_as_postgresql_15_in_both_protocols(server):
    pg = Postgres().start()
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as ref, \
                psycopg.connect(server.dsn(), autocommit=True) as sx, \
                flight_sql.connect(f"grpc://{server.addrs['flight']}", autocommit=True) as fconn, \
                fconn.cursor() as fcur:
            ref.execute("SET TimeZone = 'UTC'")
            for sql in SETUP:
                ref.execute(sql)
                sx.execute(sql)
            pgwire_agree, flight_agree, differ = 0, 0, {}
            for sql in CORPUS:
                want = pg_answer(ref, sql)
                got = pg_answer(sx, sql)
                if want[0] == "error" or got[0] == "error" or want[0] == "ok":
                    pg_same = want == got
                else:
                    pg_same = want[:2] == got[:2] and types(ref, sql) == types(sx, sql)
                # Statements that change something run once per server.
                if want[0] == "ok" or sql.startswith(("INSERT", "CREATE")):
                    fl = ("ok",) if got[0] == "ok" else ("error", "") if got[0] == "error" else ("rows", got[2])
                else:
                    fl = flight_answer(fcur, sql)
                fl_same = same_flight(want, fl, types(ref, sql) if want[0] not in ("error", "ok") else ())
                pgwire_agree += pg_same
                flight_agree += fl_same
                if not (pg_same and fl_same):
                    differ[sql] = (want, got if not pg_same else "same over pgwire",
                                   fl if not fl_same else "same over Flight SQL")
        print(f"\nPostgreSQL 15 parity: {len(CORPUS)} statements; pgwire agrees on {pgwire_agree}, "
              f"Flight SQL on {flight_agree}; {len(differ)} differ (all listed in docs/postgres-compat.md)")
        for sql, (want, got, fl) in differ.items():
            print(f"  {sql}\n    PostgreSQL: {want[:2]}\n    pgwire:     {got if isinstance(got, str) else got[:2]}"
                  f"\n    Flight SQL: {fl}")
        unexpected = {s: d for s, d in differ.items() if s not in KNOWN_DIFFERENCES}
        assert not unexpected, f"answers that differ from PostgreSQL 15's: {unexpected}"
        stale = [s for s in KNOWN_DIFFERENCES if s not in differ]
        assert not stale, f"listed as different but answer as PostgreSQL does: {stale}"
        docs = (ROOT / "docs" / "postgres-compat.md").read_text()
        undocumented = [s for s in KNOWN_DIFFERENCES if f"`{s}`" not in docs]
        assert not undocumented, f"known differences docs/postgres-compat.md does not quote: {undocumented}"
    finally:
        pg.stop()
