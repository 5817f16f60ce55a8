"""Arrow Flight SQL with real clients: ADBC (`adbc_driver_flightsql`, through
its DB-API and its Arrow methods) and `pyarrow.flight` (plain Flight, with
the Flight SQL commands encoded by hand as protobuf `Any` messages).

Also here: the same queries over pgwire (psycopg) and Flight SQL give the
same rows on a generated data set, and a 10-million-row result streams
with bounded server memory (the server's peak RSS is printed and bounded).
"""

import datetime as dt
import random
import math
import re

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as fl
import pytest
from conftest import Server
from remote_write import field_bytes, varint

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
T0_NS = 1_704_067_200_000_000_000


def connect(server):
    return flight_sql.connect(f"grpc://{server.addrs['flight']}", autocommit=True)


def pg_rows(server, sql):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


# ---------------------------------------------------------------------------
# ADBC


def test_adbc_execute_fetch_arrow_and_parameters(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE, cores BIGINT)")
        cur.execute(
            "INSERT INTO cpu VALUES ('2024-01-01T00:00:00.000000001Z', 'web-1', 42.5, 8), "
            "('2024-01-01T00:00:01Z', 'web-2', 17.0, 4), ('2024-01-01T00:00:02Z', 'db-1', NULL, NULL)"
        )
        assert cur.fetchall() == [(3,)]

        cur.execute("SELECT time, host, usage, cores FROM cpu ORDER BY time")
        table = cur.fetch_arrow_table()
        assert table.schema.field("time").type == pa.timestamp("ns", tz="UTC")
        assert table.schema.field("usage").type == pa.float64()
        assert table.schema.field("cores").type == pa.int64()
        # Nanoseconds arrive exact.
        assert table.column("time").cast(pa.int64()).to_pylist() == [T0_NS + 1, T0_NS + 10**9, T0_NS + 2 * 10**9]
        assert [str(h) for h in table.column("host").to_pylist()] == ["web-1", "web-2", "db-1"]
        assert table.column("usage").to_pylist() == [42.5, 17.0, None]

        # Parameters as ADBC's DB-API writes them (paramstyle qmark): a
        # float, a text and a timestamp, bound by the driver.
        assert flight_sql.paramstyle == "qmark"
        cur.execute(
            "SELECT host FROM cpu WHERE usage > ? AND host LIKE ? AND time >= ? ORDER BY time",
            parameters=(10.0, "web-%", T0),
        )
        assert cur.fetchall() == [("web-1",), ("web-2",)]
        # A ? in a string is text, not a parameter.
        cur.execute("SELECT count(*), 'why?' FROM cpu WHERE cores = ?", parameters=(4,))
        assert cur.fetchall() == [(1, "why?")]
        # PostgreSQL's $n works as well.
        cur.execute("SELECT count(*) FROM cpu WHERE cores = $1", (8,))
        assert cur.fetchall() == [(1,)]

        # executemany: one prepared INSERT, a batch of parameter rows.
        cur.executemany(
            "INSERT INTO cpu (time, host, usage) VALUES (?, ?, ?)",
            [(T0 + dt.timedelta(minutes=i), f"batch-{i}", float(i)) for i in range(1, 6)],
        )
        cur.execute("SELECT count(*), sum(usage) FROM cpu WHERE host LIKE 'batch-%'")
        assert cur.fetchall() == [(5, 15.0)]

        # Sextant's own statements go through the same statement layer.
        cur.execute("FLUSH TABLE cpu")
        assert cur.fetchall() == [(1,)]
        cur.execute("SELECT table_name, rows FROM system.files")
        assert cur.fetchall() == [("cpu", 8)]
    # The rows over pgwire.
    assert pg_rows(server, "SELECT count(*) FROM cpu") == [(8,)]


def test_adbc_reference_table_ingest_and_join(server):
    """A reference table (no time column): rows ingested with ADBC and
    inserted with a ? parameter, joined with a time series."""
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE hosts (host TEXT, team TEXT)")
        cur.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)")
        cur.adbc_ingest("hosts", pa.table({"host": ["web-1", "db-1"], "team": ["web", "db"]}), mode="append")
        cur.execute("INSERT INTO hosts VALUES (?, ?)", parameters=("web-2", "web"))
        cur.adbc_ingest("cpu", pa.table({
            "time": pa.array([T0_NS, T0_NS, T0_NS + 10**9], pa.timestamp("ns", tz="UTC")),
            "host": ["web-1", "db-1", "web-2"],
            "usage": [10.0, 50.0, 30.0],
        }), mode="append")
        assert conn.adbc_get_table_schema("hosts").names == ["host", "team"]
        cur.execute(
            "SELECT h.team, avg(c.usage) FROM cpu c JOIN hosts h ON c.host = h.host "
            "WHERE h.team = ? GROUP BY h.team", parameters=("web",))
        assert cur.fetchall() == [("web", 20.0)]
    assert pg_rows(server, "SELECT host, team FROM hosts ORDER BY host") == [
        ("db-1", "db"), ("web-1", "web"), ("web-2", "web")]


def ingest_table(hosts, start_ns=T0_NS, extra=None):
    cols = {
        "time": pa.array([start_ns + i for i in range(len(hosts))], pa.timestamp("ns")),
        "host": pa.array(hosts, pa.string()),
    }
    if extra is not None:
        cols["n"] = pa.array(extra, pa.int32())
    return pa.table(cols)


def test_adbc_ingest_modes_and_durability(server):
    with connect(server) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("ev", ingest_table(["a", "b"], extra=[1, 2]), mode="create") == 2
        with pytest.raises(flight_sql.Error, match="ALREADY_EXISTS"):
            cur.adbc_ingest("ev", ingest_table(["x"]), mode="create")
        with pytest.raises(flight_sql.Error, match="NOT_FOUND"):
            cur.adbc_ingest("missing", ingest_table(["x"]), mode="append")
        # Append with a column fewer (null there) and a timestamp in
        # microseconds (converted losslessly to the table's nanoseconds).
        micro = pa.table({"time": pa.array([T0 + dt.timedelta(seconds=5)], pa.timestamp("us")), "host": ["c"]})
        assert cur.adbc_ingest("ev", micro, mode="append") == 1
        assert cur.adbc_ingest("ev", ingest_table(["d"], start_ns=T0_NS + 10**10, extra=[4]), mode="create_append") == 1
        # A type conflict names the column and both types; nothing is written.
        bad = pa.table({"time": pa.array([T0_NS], pa.timestamp("ns")), "n": pa.array(["four"])})
        with pytest.raises(flight_sql.Error, match=r'column "n" of table "ev" is Int32, but this write has Utf8'):
            cur.adbc_ingest("ev", bad, mode="append")
        with pytest.raises(flight_sql.Error, match=r'needs a "time" column'):
            cur.adbc_ingest("notime", pa.table({"x": [1]}), mode="create")
        # An ingested table is a table like any other, with a column added
        # on first sight.
        wide = pa.table({"time": pa.array([T0_NS + 20 * 10**9], pa.timestamp("ns")), "host": ["e"], "region": ["eu"]})
        assert cur.adbc_ingest("ev", wide, mode="append") == 1

    # Acknowledged means durable: kill -9, restart, every row is there.
    server.proc.kill()
    server.proc.wait()
    server.start()
    assert pg_rows(server, "SELECT host, n, region FROM ev ORDER BY time") == [
        ("a", 1, None), ("b", 2, None), ("c", None, None), ("d", 4, None), ("e", None, "eu"),
    ]
    with connect(server) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("ev", ingest_table(["z"], extra=[9]), mode="replace") == 1
        cur.execute("SELECT host, n FROM ev")
        assert cur.fetchall() == [("z", 9)]


def test_token_search_through_flight_sql_and_pgwire(server):
    """Logs ingested through Arrow Flight, searched with matches_term and a
    bound term (ADBC's ?, psycopg's %s), from the buffer and from Parquet;
    the expected counts come from Python's regex over the same bodies."""
    words = ["request", "served", "deadlock", "deadlocks", "shard", "cache", "miss"]
    rng = random.Random(7)
    bodies = [" ".join(rng.choice(words) for _ in range(6)) + f" #{i}" for i in range(5000)]
    times = pa.array([T0_NS + i * 10**9 for i in range(5000)], pa.timestamp("ns", tz="UTC"))
    table = pa.table({"time": times, "body": bodies})

    def expected(term):
        return sum(1 for b in bodies if re.search(rf"(?<![^\W_]){re.escape(term)}(?![^\W_])", b))

    def flight_count(cur, term):
        cur.execute("SELECT count(*) FROM searchlogs WHERE matches_term(body, ?)", parameters=(term,))
        return cur.fetchall()[0][0]

    def pg_count(term):
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM searchlogs WHERE matches_term(body, %s)", (term,)).fetchone()[0]

    terms = ["deadlock", "deadlocks", "shard miss", "#4999", "absent"]
    with connect(server) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("searchlogs", table, mode="create") == 5000
        for term in terms:
            assert flight_count(cur, term) == expected(term), term
            assert pg_count(term) == expected(term), term
        cur.execute("FLUSH TABLE searchlogs")
        cur.fetchall()
        for term in terms:
            assert flight_count(cur, term) == expected(term), term
            assert pg_count(term) == expected(term), term
        # No file holds the term: the index says so, and none is read.
        cur.execute("EXPLAIN SELECT count(*) FROM searchlogs WHERE matches_term(body, 'absent')")
        plan = "\n".join(str(r[1]) for r in cur.fetchall())
        assert re.search(r"files=0 scanned, [1-9]\d* skipped", plan), plan


def test_adbc_get_objects_and_info(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)")
        cur.adbc_ingest("mem", pa.table({"time": pa.array([T0_NS], pa.timestamp("ns")), "used": [1]}), mode="create")
        objects = conn.adbc_get_objects(depth="all", catalog_filter="sextant").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["sextant"]
        schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
        assert {"public", "system", "information_schema", "pg_catalog"} <= schemas.keys()
        public = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        assert public.keys() == {"cpu", "mem"}
        assert public["cpu"]["table_type"] == "TABLE"
        assert [c["column_name"] for c in public["cpu"]["table_columns"]] == ["time", "host", "usage"]
        assert [c["column_name"] for c in public["mem"]["table_columns"]] == ["time", "used"]
        system = {t["table_name"]: t["table_type"] for t in schemas["system"]["db_schema_tables"]}
        assert system["files"] == "SYSTEM TABLE"

        assert set(conn.adbc_get_table_types()) == {"TABLE", "VIEW", "SYSTEM TABLE"}
        # A materialized view is listed as a view, with its columns.
        cur.execute(
            "CREATE MATERIALIZED VIEW cpu_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, "
            "host, max(usage) AS peak FROM cpu GROUP BY 1, 2"
        )
        objects = conn.adbc_get_objects(depth="all", catalog_filter="sextant").read_all().to_pylist()
        schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
        public = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        assert public["cpu_1m"]["table_type"] == "VIEW"
        assert [c["column_name"] for c in public["cpu_1m"]["table_columns"]] == ["time", "host", "peak"]
        assert conn.adbc_get_table_schema("cpu", db_schema_filter="public").names == ["time", "host", "usage"]
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Sextant"


def test_adbc_errors_name_the_problem(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data, ["--query-memory-limit", "16MiB"])
    server.start()
    try:
        with connect(server) as conn, conn.cursor() as cur:
            with pytest.raises(flight_sql.Error, match="INVALID_ARGUMENT.*syntax error"):
                cur.execute("SELEC 1")
            with pytest.raises(flight_sql.Error, match=r"NOT_FOUND.*nope"):
                cur.execute("SELECT * FROM nope")
            # ADBC has no status of its own for this gRPC code; the code
            # stands in its message.
            with pytest.raises(flight_sql.Error, match=r"memory pool(.|\n)*\(ResourceExhausted; DoGet"):
                cur.execute(
                    "SELECT a.value FROM generate_series(1, 2000000) a "
                    "JOIN generate_series(1, 2000000) b ON a.value = b.value ORDER BY a.value DESC"
                )
                cur.fetchall()
            # The server keeps serving.
            cur.execute("SELECT 41 + 1")
            assert cur.fetchall() == [(42,)]
    finally:
        server.proc.kill()
        server.proc.wait()


# ---------------------------------------------------------------------------
# pyarrow.flight: plain Flight with hand-encoded Flight SQL commands


def flight_sql_command(name: str, payload: bytes) -> bytes:
    """A `google.protobuf.Any` wrapping the Flight SQL message `name`."""
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()
    return field_bytes(1, type_url) + field_bytes(2, payload)


def statement_query(sql: str) -> fl.FlightDescriptor:
    return fl.FlightDescriptor.for_command(flight_sql_command("CommandStatementQuery", field_bytes(1, sql.encode())))


def read_varint(data: bytes, i: int):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def test_pyarrow_flight_query_ingest_and_catalogs(server):
    client = fl.connect(f"grpc://{server.addrs['flight']}")
    # Bulk ingest: DoPut of CommandStatementIngest {options: create / append,
    # table: "pa"} with two batches.
    options = varint(1 << 3) + varint(1) + varint(2 << 3) + varint(2)  # if_not_exist=CREATE, if_exists=APPEND
    ingest = flight_sql_command("CommandStatementIngest", field_bytes(1, options) + field_bytes(2, b"pa"))
    schema = pa.schema([("time", pa.timestamp("ns", tz="UTC")), ("v", pa.float64())])
    writer, reader = client.do_put(fl.FlightDescriptor.for_command(ingest), schema)
    for start in (0, 3):
        writer.write_batch(pa.record_batch(
            [pa.array([T0_NS + start + i for i in range(3)], schema.field("time").type), pa.array([start + i * 0.5 for i in range(3)])],
            schema=schema,
        ))
    writer.done_writing()
    answer = reader.read()
    writer.close()
    # DoPutUpdateResult {record_count = 1 (int64)}.
    assert answer.to_pybytes()[0] == 1 << 3
    assert read_varint(answer.to_pybytes(), 1)[0] == 6

    info = client.get_flight_info(statement_query("SELECT time, v FROM pa ORDER BY time"))
    assert info.schema.names == ["time", "v"]
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0_NS + i for i in range(6)]
    assert table.column("v").to_pylist() == [0.0, 0.5, 1.0, 3.0, 3.5, 4.0]

    # GetCatalogs: no fields.
    info = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command("CommandGetCatalogs", b"")))
    assert client.do_get(info.endpoints[0].ticket).read_all().column("catalog_name").to_pylist() == ["sextant"]

    # A bad statement: INVALID_ARGUMENT, which pyarrow raises as ArrowInvalid.
    with pytest.raises(pa.ArrowInvalid, match="syntax error"):
        client.get_flight_info(statement_query("SELEC 1"))


# ---------------------------------------------------------------------------
# pgwire and Flight SQL agree

COMPARED_QUERIES = [
    "SELECT * FROM m ORDER BY time, host",
    "SELECT host, count(*), sum(v), min(v), max(v), avg(v) FROM m GROUP BY host ORDER BY host",
    "SELECT date_bin(INTERVAL '10 minutes', time) AS bucket, region, count(*), sum(n) FROM m "
    "GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT count(*), count(v), count(DISTINCT host), sum(n) FROM m",
    "SELECT host, v FROM m WHERE v IS NULL ORDER BY time, host",
    "SELECT * FROM m WHERE time >= '2024-01-01T00:30:00Z' AND time < '2024-01-01T00:40:00Z' AND ok ORDER BY time, host",
    "SELECT upper(host) AS h, length(region) AS l, n % 7 AS r FROM m ORDER BY time, host LIMIT 50",
    "SELECT region, approx_distinct(host) AS hosts, max(time) AS last FROM m GROUP BY region ORDER BY region",
    "SELECT host, time, v, lag(v) OVER (PARTITION BY host ORDER BY time) AS prev FROM m ORDER BY host, time LIMIT 100",
    "SELECT a.host, count(*) FROM m a JOIN (SELECT DISTINCT host FROM m WHERE region = 'eu') b ON a.host = b.host "
    "GROUP BY a.host ORDER BY a.host",
    "SELECT CASE WHEN v > 50 THEN 'high' WHEN v IS NULL THEN 'none' ELSE 'low' END AS k, count(*) FROM m GROUP BY 1 ORDER BY 1",
    "SELECT host, last_value(v ORDER BY time) AS last_v FROM m GROUP BY host ORDER BY host",
    "SELECT table_name, buffered_rows + persisted_rows AS rows FROM system.tables ORDER BY table_name",
]


def normalize(value):
    """One Python value per SQL value, whichever client read it."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def same_rows(a, b) -> bool:
    """Equal row for row and value for value; doubles to 1e-12 relative,
    because a parallel sum adds in no fixed order (two runs over the same
    protocol can differ in the last digit too)."""
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        if len(ra) != len(rb):
            return False
        for va, vb in zip(ra, rb):
            if isinstance(va, float) and isinstance(vb, float):
                if not math.isclose(va, vb, rel_tol=1e-12, abs_tol=1e-12):
                    return False
            elif va != vb:
                return False
    return True


def test_pgwire_and_flight_sql_return_the_same_rows(server):
    rng = random.Random(20241201)
    hosts = [f"host-{i:02d}" for i in range(12)]
    rows = []
    for minute in range(60):
        for host in hosts:
            if rng.random() < 0.2:
                continue
            t = T0 + dt.timedelta(minutes=minute, microseconds=rng.randrange(60_000_000))
            v = None if rng.random() < 0.1 else round(rng.uniform(0, 100), 3)
            rows.append((t, host, "eu" if hosts.index(host) % 3 == 0 else "us", v, rng.randrange(1000), rng.random() < 0.5))
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, region TEXT, v DOUBLE, n BIGINT, ok BOOLEAN)"
        )
        half = len(rows) // 2
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO m VALUES (%s, %s, %s, %s, %s, %s)", rows[:half])
        # Half of the rows in Parquet, half in the write buffer.
        conn.execute("FLUSH TABLE m")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO m VALUES (%s, %s, %s, %s, %s, %s)", rows[half:])

    with psycopg.connect(server.dsn(), autocommit=True) as pg, connect(server) as fconn, fconn.cursor() as fcur:
        for sql in COMPARED_QUERIES:
            pcur = pg.execute(sql)
            over_pg = [tuple(normalize(v) for v in r) for r in pcur.fetchall()]
            fcur.execute(sql)
            over_flight = [tuple(normalize(v) for v in r) for r in fcur.fetchall()]
            assert over_pg, f"no rows: {sql}"
            # The same column names too (Postgres' names on both).
            assert [d[0] for d in fcur.description] == [d.name for d in pcur.description], sql
            assert same_rows(over_flight, over_pg), (sql, over_flight, over_pg)
    assert over_pg == [("m", len(rows))]


# ---------------------------------------------------------------------------
# Streaming: bounded server memory for a 10-million-row result


def memory_kib(pid: int) -> dict:
    status = open(f"/proc/{pid}/status").read()
    return {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) for k in ("VmHWM", "VmRSS")}


ROWS = 10_000_000
# A materialized result would hold at least its Arrow size (here about
# 10M x (8 + 8 + 12) bytes = 267 MiB) in the server; a streamed one holds a
# few batches. The bound leaves room for the server's own baseline.
PEAK_RSS_BOUND_MIB = 256


def test_ten_million_rows_stream_with_bounded_memory(server):
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE big (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE)")
        conn.execute(
            "INSERT INTO big SELECT to_timestamp(1704067200 + value / 1000.0), 'host-' || (value % 50), value * 0.5 "
            f"FROM generate_series(1, {ROWS})"
        )
        conn.execute("FLUSH TABLE big")
    # A fresh process, so that its peak RSS is the query's (the insert and
    # the flush above used memory of their own).
    server.stop()
    server.start()
    before = memory_kib(server.proc.pid)
    client = fl.connect(f"grpc://{server.addrs['flight']}")
    info = client.get_flight_info(statement_query("SELECT time, host, v FROM big"))
    rows = batches = 0
    total = 0.0
    for chunk in client.do_get(info.endpoints[0].ticket):
        rows += chunk.data.num_rows
        batches += 1
        total += pc.sum(chunk.data.column("v")).as_py()
    after = memory_kib(server.proc.pid)
    print(
        f"\n10M-row Flight SQL result: {rows} rows in {batches} batches; server RSS before "
        f"{before['VmRSS'] // 1024} MiB, peak {after['VmHWM'] // 1024} MiB, after {after['VmRSS'] // 1024} MiB"
    )
    assert rows == ROWS
    assert total == sum(range(1, ROWS + 1)) * 0.5
    assert batches > 100
    assert after["VmHWM"] < PEAK_RSS_BOUND_MIB * 1024, after


def test_writing_to_a_materialized_view_is_refused_as_failed_precondition(server):
    """docs/views.md: only its maintenance writes a view; Flight DoPut and
    a Flight INSERT are refused with gRPC FAILED_PRECONDITION (42809)."""
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)")
        cur.execute("CREATE MATERIALIZED VIEW cpu_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, "
                    "host, avg(usage) AS usage FROM cpu GROUP BY 1, 2")
        table = pa.table({"time": pa.array([T0_NS], pa.timestamp("ns", tz="UTC")), "host": ["a"], "usage": [1.0]})
        for write in (lambda: cur.adbc_ingest("cpu_1m", table, mode="append"),
                      lambda: cur.execute("INSERT INTO cpu_1m VALUES (now(), 'a', 1.0)")):
            with pytest.raises(adbc_driver_manager.Error) as err:
                write()
            message = str(err.value)
            assert "FailedPrecondition" in message or "FAILED_PRECONDITION" in message, message
            assert "materialized view" in message, message


def test_transactions_are_answered_unimplemented(server):
    """docs/flight-sql.md: BeginTransaction answers UNIMPLEMENTED, saying
    why (an Any-wrapped ActionBeginTransactionRequest, as Flight SQL
    clients send it)."""
    client = fl.FlightClient(f"grpc://{server.addrs['flight']}")
    url = b"type.googleapis.com/arrow.flight.protocol.sql.ActionBeginTransactionRequest"
    with pytest.raises(pa.ArrowNotImplementedError) as err:
        list(client.do_action(fl.Action("BeginTransaction", b"\x0a" + bytes([len(url)]) + url)))
    assert "transactions are not supported: every write is committed once acknowledged" in str(err.value)


def test_temporary_table_ingest_is_refused(server):
    """docs/flight-sql.md: temporary tables are refused (bulk ingest)."""
    with connect(server) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.adbc_ingest("scratch", pa.table({"time": pa.array([T0_NS], pa.timestamp("ns")), "v": [1]}),
                            mode="create", temporary=True)
        assert "temporary tables are not supported" in str(err.value), str(err.value)
    assert pg_rows(server, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'scratch'") == [(0,)]


def test_errors_carry_the_sqlstate_in_metadata(server):
    """docs/flight-sql.md: every error is a gRPC status and its SQLSTATE is
    in the `x-sqlstate` metadata entry (read here with plain gRPC)."""
    import grpc

    def field(number, payload):
        out, n = bytearray([number << 3 | 2]), len(payload)
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out) + payload

    def get_flight_info(sql):
        command = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(
            2, field(1, sql.encode()))
        descriptor = b"\x08\x02" + field(2, command)  # type = CMD, cmd = Any(CommandStatementQuery)
        with grpc.insecure_channel(server.addrs["flight"]) as channel:
            call = channel.unary_unary("/arrow.flight.protocol.FlightService/GetFlightInfo",
                                       request_serializer=lambda b: b, response_deserializer=lambda b: b)
            with pytest.raises(grpc.RpcError) as err:
                call(descriptor, timeout=30)
        return err.value.code(), dict(err.value.trailing_metadata() or ()).get("x-sqlstate"), err.value.details()

    assert get_flight_info("SELECT * FROM nope")[:2] == (grpc.StatusCode.NOT_FOUND, "42P01")
    assert get_flight_info("SELEC 1")[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "42601")


def test_adbc_delete_reports_the_rows_it_removed(server):
    """DELETE over Flight SQL through ADBC: the rows go, the count comes back."""
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE gone (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE)")
        cur.adbc_ingest("gone", pa.table({
            "time": pa.array([T0_NS + i for i in range(10)], pa.timestamp("ns", tz="UTC")),
            "host": [f"h{i % 2}" for i in range(10)],
            "v": [float(i) for i in range(10)],
        }), mode="append")
        cur.execute("DELETE FROM gone WHERE host = 'h0'")
        assert cur.fetchall() == [(5,)]
        cur.execute("SELECT count(*), sum(v) FROM gone")
        assert cur.fetchall() == [(5, 25.0)]
        # With a ? parameter, as ADBC's DB-API binds it.
        cur.execute("DELETE FROM gone WHERE v > ?", parameters=(6.0,))
        assert cur.fetchall() == [(2,)]  # 7 and 9
        cur.execute("SELECT count(*), sum(v) FROM gone")
        assert cur.fetchall() == [(3, 9.0)]
    assert pg_rows(server, "SELECT host FROM gone GROUP BY host") == [("h1",)]


def test_adbc_ingest_follows_the_key(server):
    """Bulk ingest (DoPut) into a keyed table: a row of a key already
    stored replaces it, whether the stored row is buffered or in Parquet,
    and a key twice in one batch keeps the later row."""
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE kput (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE, PRIMARY KEY (host, time))"
        )

        def put(hosts, values):
            cur.adbc_ingest("kput", pa.table({
                "time": pa.array([T0_NS] * len(hosts), pa.timestamp("ns", tz="UTC")),
                "host": hosts,
                "v": values,
            }), mode="append")

        put(["a", "b", "a"], [1.0, 2.0, 3.0])
        cur.execute("SELECT host, v FROM kput ORDER BY host")
        assert cur.fetchall() == [("a", 3.0), ("b", 2.0)]
        cur.execute("FLUSH TABLE kput")
        put(["b"], [20.0])
        cur.execute("SELECT host, v FROM kput WHERE v > ? ORDER BY host", parameters=(1.5,))
        assert cur.fetchall() == [("a", 3.0), ("b", 20.0)]
        # The same batch again (a retry) changes nothing.
        put(["b"], [20.0])
        cur.execute("SELECT count(*), sum(v) FROM kput")
        assert cur.fetchall() == [(2, 23.0)]
    assert pg_rows(server, "SELECT host, v FROM kput ORDER BY host") == [("a", 3.0), ("b", 20.0)]
