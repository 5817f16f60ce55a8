"""psycopg (libpq-compatible, extended protocol with parameters) against sextant."""

import datetime as dt
import signal

import psycopg
import pytest
from psycopg import errors


UTC = dt.timezone.utc


def test_create_insert_select_with_parameters(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)")
        t0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
        for i in range(5):
            conn.execute(
                "INSERT INTO cpu VALUES (%s, %s, %s)",
                (t0 + dt.timedelta(seconds=i), f"h{i % 2}", i * 1.5),
            )
        rows = conn.execute(
            "SELECT host, count(*), sum(usage) FROM cpu WHERE time >= %s GROUP BY host ORDER BY host",
            (t0 + dt.timedelta(seconds=1),),
        ).fetchall()
        assert rows == [("h0", 2, 9.0), ("h1", 2, 6.0)]
        first = conn.execute("SELECT time FROM cpu ORDER BY time LIMIT 1").fetchone()[0]
        assert first == t0


def test_errors_carry_sqlstate_and_connection_survives(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")
        with pytest.raises(errors.SyntaxError):
            conn.execute("SELEC 1")
        conn.execute("CREATE TABLE t (time TIMESTAMP NOT NULL, v BIGINT)")
        with pytest.raises(errors.UndefinedColumn):
            conn.execute("SELECT nope FROM t")
        with pytest.raises(psycopg.errors.InvalidDatetimeFormat):
            conn.execute("INSERT INTO t VALUES ('not a time', 1)")
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_rows_survive_restart_after_flush(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE r (time TIMESTAMP NOT NULL, v BIGINT)")
        conn.execute(
            "INSERT INTO r SELECT to_timestamp(1704067200 + value * 60), value FROM generate_series(0, 1439)"
        )
        conn.execute("FLUSH TABLE r")
        conn.execute("INSERT INTO r VALUES ('2024-01-02T00:00:00Z', 9999)")
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        count, total = conn.execute("SELECT count(*), sum(v) FROM r").fetchone()
        assert (count, total) == (1441, sum(range(1440)) + 9999)
        files = conn.execute("SELECT count(*) FROM system.files WHERE table_name = 'r'").fetchone()[0]
        assert files == 24


def test_statement_timeout_stops_the_whole_statement(server):
    """SET statement_timeout cancels a statement that is still computing
    its answer, or still sending rows, with 57014 in PostgreSQL's words; the
    connection goes on, and system.queries says the statement was
    cancelled."""
    import time

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        # Read and shown as PostgreSQL 15 reads and shows them.
        for value, shown in [("'1.5s'", "1500ms"), ("'5 s'", "5s"), ("3600000", "1h"), ("0", "0")]:
            conn.execute(f"SET statement_timeout = {value}")
            assert conn.execute("SHOW statement_timeout").fetchone() == (shown,), value
        with pytest.raises(errors.InvalidParameterValue) as e:
            conn.execute("SET statement_timeout = 'soon'")
        assert 'invalid value for parameter "statement_timeout": "soon"' in str(e.value)
        conn.execute("SET statement_timeout = '500ms'")
        for sql in [
            # Computing: no row until the whole count is done.
            "SELECT count(*) FROM generate_series(1, 20000000000)",
            # Streaming: rows flow from the start, for far longer than 500 ms.
            "SELECT * FROM generate_series(1, 2000000000)",
        ]:
            started = time.monotonic()
            with pytest.raises(errors.QueryCanceled) as e:
                conn.execute(sql).fetchall()
            took = time.monotonic() - started
            assert e.value.sqlstate == "57014"
            assert "canceling statement due to statement timeout" in str(e.value), str(e.value)
            assert took < 10, f"{sql}: cancelled only after {took:.1f} s"
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.execute("RESET statement_timeout")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        states = conn.execute(
            "SELECT state, error FROM system.queries WHERE query LIKE '%generate_series(1, 2%' "
            "AND query NOT LIKE '%system.queries%' ORDER BY query_id"
        ).fetchall()
        assert states == [("cancelled", "canceling statement due to statement timeout")] * 2, states


def test_delete_counts_rows_and_they_stay_gone(server):
    """DELETE through psycopg: rowcount is the command tag's count, the rows
    go from the buffer and from Parquet, and stay gone after a restart and
    after compaction; an error names the problem with its SQLSTATE."""
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE del (time TIMESTAMP NOT NULL, host TEXT, v BIGINT)")
        conn.execute(
            "INSERT INTO del SELECT to_timestamp(1704067200 + value), 'h' || (value % 4), value "
            "FROM generate_series(1, 400)"
        )
        conn.execute("FLUSH TABLE del")
        conn.execute(
            "INSERT INTO del SELECT to_timestamp(1704070000 + value), 'h' || (value % 4), value "
            "FROM generate_series(1, 100)"
        )
        cur = conn.execute("DELETE FROM del WHERE host = 'h1'")
        assert cur.rowcount == 125
        assert cur.statusmessage == "DELETE 125"
        # With parameters, as psycopg sends them (server-side binding).
        cur = conn.execute(
            "DELETE FROM del WHERE v > %s AND time < %s",
            (390, dt.datetime(2024, 1, 1, 0, 59, tzinfo=UTC)),
        )
        assert cur.rowcount == 8  # 391..400 but 393 and 397 (h1, gone already)
        with pytest.raises(errors.UndefinedColumn):
            conn.execute("DELETE FROM del WHERE nope = 1")
        want = conn.execute("SELECT host, count(*), sum(v) FROM del GROUP BY host ORDER BY host").fetchall()
    # kill -9: the deleted rows still in the WAL are deleted again on replay.
    server.stop(signal.SIGKILL)
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT host, count(*), sum(v) FROM del GROUP BY host ORDER BY host").fetchall() == want
        conn.execute("COMPACT TABLE del")
        assert conn.execute("SELECT host, count(*), sum(v) FROM del GROUP BY host ORDER BY host").fetchall() == want
        assert conn.execute("SELECT count(*) FROM del WHERE host = 'h1'").fetchone() == (0,)


def test_copy_and_insert_follow_the_key(server):
    """COPY and INSERT into a keyed table: the later row of a key replaces
    the earlier, in the buffer, in Parquet and after compaction; a retried
    COPY changes nothing."""
    rows = [("2024-01-01T00:00:00Z", "a", 1), ("2024-01-01T00:00:00Z", "b", 2), ("2024-01-01T00:01:00Z", "a", 3)]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE kcopy (time TIMESTAMP NOT NULL, host TEXT, v BIGINT, PRIMARY KEY (host, time))"
        )
        for _ in range(2):  # the second COPY is a retry of the first
            with conn.cursor().copy("COPY kcopy (time, host, v) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        assert conn.execute("SELECT count(*), sum(v) FROM kcopy").fetchone() == (3, 6)
        conn.execute("FLUSH TABLE kcopy")
        cur = conn.execute(
            "INSERT INTO kcopy VALUES (%s, %s, %s)", (dt.datetime(2024, 1, 1, tzinfo=UTC), "b", 20)
        )
        assert cur.rowcount == 1
        want = [("a", 1), ("a", 3), ("b", 20)]
        assert conn.execute("SELECT host, v FROM kcopy ORDER BY host, time").fetchall() == want
        conn.execute("FLUSH TABLE kcopy")
        conn.execute("COMPACT TABLE kcopy")
        assert conn.execute("SELECT host, v FROM kcopy ORDER BY host, time").fetchall() == want
        with pytest.raises(errors.NotNullViolation):
            conn.execute("INSERT INTO kcopy VALUES ('2024-01-01T00:02:00Z', NULL, 1)")
