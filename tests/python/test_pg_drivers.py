"""The Postgres drivers people use, against sextant: psycopg 3 (text and
binary formats, server-side parameters), asyncpg (binary, prepared
statements), SQLAlchemy Core and pandas.read_sql; every common type as a
parameter and as a result, NULL included; and what pools and ORMs send
(SET/RESET/SHOW, DISCARD ALL, DEALLOCATE, transactions, session functions).
"""

import asyncio
import datetime as dt
import decimal
import uuid

import asyncpg
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from psycopg.types.json import Json, Jsonb

UTC = dt.timezone.utc

TYPES_TABLE = (
    "CREATE TABLE ty (time TIMESTAMP NOT NULL, i2 SMALLINT, i4 INTEGER, i8 BIGINT, f4 REAL, "
    "f8 DOUBLE PRECISION, n NUMERIC(10,2), t TEXT, v VARCHAR(20), b BOOLEAN, ts TIMESTAMP, "
    "d DATE, iv INTERVAL, by BYTEA, u UUID, j JSON, jb JSONB)"
)
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
U = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")

# One row of every type, as Python values, and as psycopg reads it back.
ROW = (T0, 1, 2, 3, 1.5, 2.25, decimal.Decimal("12.34"), "x", "y", True, dt.datetime(2024, 1, 2, 3, 4, 5),
       dt.date(2024, 1, 3), dt.timedelta(days=1, hours=2), b"\xde\xad\x00", U, Json({"a": 1}), Jsonb({"b": [1, 2]}))
READ = ROW[:14] + (U, {"a": 1}, {"b": [1, 2]})
# asyncpg reads json and jsonb as text (its default codec, as with Postgres).
READ_ASYNCPG = ROW[:14] + (U, '{"a": 1}', '{"b": [1, 2]}')
NULLS = (T0 + dt.timedelta(seconds=1),) + (None,) * 16


def dsn(server, user="driver"):
    return server.dsn().replace("user=sextant", f"user={user}")


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_every_type_as_parameter_and_result(server, binary):
    with psycopg.connect(dsn(server), autocommit=True) as conn:
        conn.execute(TYPES_TABLE)
        with conn.cursor(binary=binary) as cur:
            placeholders = ", ".join(["%s"] * len(ROW))
            cur.execute(f"INSERT INTO ty VALUES ({placeholders})", ROW)
            cur.execute(f"INSERT INTO ty VALUES ({placeholders})", NULLS)
            cur.execute("SELECT * FROM ty ORDER BY time")
            rows = cur.fetchall()
            names = [d.name for d in cur.description]
            types = [d.type_code for d in cur.description]
        assert names[:3] == ["time", "i2", "i4"]
        # uuid, json and jsonb columns keep their Postgres types.
        assert types[-3:] == [2950, 114, 3802], types
        assert rows[0] == READ, rows[0]
        # NULL is NULL for every type (an interval too).
        assert rows[1] == (NULLS[0],) + (None,) * 16, rows[1]
        # Parameters of each type, bound server-side (extended protocol).
        with conn.cursor(binary=binary) as cur:
            cur.execute(
                "SELECT %s::int2, %s::int4, %s::int8, %s::float4, %s::float8, %s::numeric, %s::text, %s::bool, "
                "%s::timestamptz, %s::timestamp, %s::date, %s::interval, %s::bytea, %s::uuid, %s::jsonb, %s::text IS NULL",
                (1, 2, 3, 1.5, 2.5, decimal.Decimal("1.25"), "t", False, T0, dt.datetime(2024, 1, 1),
                 dt.date(2024, 1, 1), dt.timedelta(minutes=5), b"\x01", U, Jsonb({"x": 1}), None),
            )
            got = cur.fetchone()
        assert got[:5] == (1, 2, 3, 1.5, 2.5)
        assert got[5] == decimal.Decimal("1.25")
        assert got[6:13] == ("t", False, T0, dt.datetime(2024, 1, 1), dt.date(2024, 1, 1),
                             dt.timedelta(minutes=5), b"\x01")
        assert got[13:] == (U, {"x": 1}, True)
        # A filter on a parameter, and the same statement prepared server-side.
        with conn.cursor(binary=binary) as cur:
            for _ in range(3):
                cur.execute("SELECT count(*) FROM ty WHERE i8 = %s", (3,), prepare=True)
                assert cur.fetchone() == (1,)


def test_pool_and_orm_statements(server):
    with psycopg.connect(dsn(server, "pool"), autocommit=True) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        assert one("SELECT version()").startswith("PostgreSQL 16.6 (Sextant ")
        assert one("SHOW server_version").startswith("16.6")
        assert one("SHOW server_version_num") == "160006"
        assert conn.info.server_version == 160006
        assert one("SELECT current_database()") == "sextant"
        assert one("SELECT current_schema()") == "public"
        assert one("SELECT current_user") == "pool"
        assert isinstance(one("SELECT pg_backend_pid()"), int)
        assert one("SHOW transaction isolation level") == "read committed"
        conn.execute("SET application_name = 'orders-api'")
        assert one("SHOW application_name") == "orders-api"
        assert one("SELECT current_setting('application_name')") == "orders-api"
        conn.execute("RESET application_name")
        assert one("SHOW application_name") == ""
        conn.execute("SET TIME ZONE 'Europe/Berlin'")
        assert one("SHOW timezone") == "Europe/Berlin"
        conn.execute("RESET ALL")
        assert one("SHOW TimeZone") == "UTC"
        conn.execute("DISCARD ALL")
        conn.execute("DEALLOCATE ALL")
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            conn.execute("DEALLOCATE nope")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET client_encoding = 'LATIN1'")
        for stmt in ("BEGIN", "SAVEPOINT s1", "RELEASE SAVEPOINT s1", "COMMIT", "BEGIN", "ROLLBACK"):
            conn.execute(stmt)
        assert "TimeZone" in [r[0] for r in conn.execute("SHOW ALL").fetchall()]
    # Another connection does not see the first one's settings.
    with psycopg.connect(dsn(server, "other"), autocommit=True) as conn:
        assert conn.execute("SHOW application_name").fetchone()[0] == ""
    # psycopg's transaction blocks (BEGIN ... COMMIT, savepoints inside).
    with psycopg.connect(dsn(server)) as conn:
        conn.execute("CREATE TABLE tx (time TIMESTAMP NOT NULL, v BIGINT)")
        with conn.transaction():
            conn.execute("INSERT INTO tx VALUES (%s, 1)", (T0,))
            with conn.transaction():
                conn.execute("INSERT INTO tx VALUES (%s, 2)", (T0,))
        conn.commit()
        assert conn.execute("SELECT sum(v) FROM tx").fetchone()[0] == 3


def test_asyncpg(server):
    host, port = server.pg

    async def run():
        conn = await asyncpg.connect(host=host, port=port, user="asyncpg", database="sextant")
        try:
            assert (await conn.fetchval("SELECT version()")).startswith("PostgreSQL 16.6")
            await conn.execute(TYPES_TABLE)
            args = list(ROW)
            args[14] = str(U)  # the server describes a uuid parameter as text
            args[15] = '{"a": 1}'
            args[16] = '{"b": [1, 2]}'
            placeholders = ", ".join(f"${i}" for i in range(1, len(ROW) + 1))
            await conn.execute(f"INSERT INTO ty VALUES ({placeholders})", *args)
            await conn.execute(f"INSERT INTO ty VALUES ({placeholders})", *NULLS)
            rows = await conn.fetch("SELECT * FROM ty WHERE time >= $1 ORDER BY time", T0)
            assert tuple(rows[0].values()) == READ_ASYNCPG, rows[0]
            assert tuple(rows[1].values()) == (NULLS[0],) + (None,) * 16
            await conn.executemany(
                "INSERT INTO ty (time, i8, t) VALUES ($1, $2, $3)",
                [(T0 + dt.timedelta(minutes=m), m, f"m{m}") for m in range(11, 14)],
            )
            assert await conn.fetchval("SELECT sum(i8) FROM ty WHERE t LIKE 'm%'") == 36
            stmt = await conn.prepare("SELECT t FROM ty WHERE i8 = $1")
            assert [await stmt.fetchval(m) for m in (11, 12, 13)] == ["m11", "m12", "m13"]
            async with conn.transaction():
                await conn.execute("INSERT INTO ty (time, t) VALUES ($1, 'in-tx')", T0)
            assert await conn.fetchval("SELECT count(*) FROM ty WHERE t = 'in-tx'") == 1
            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                await conn.fetch("SELECT * FROM nope")
        finally:
            await conn.close()

    asyncio.run(run())


def test_sqlalchemy_core_and_pandas(server):
    host, port = server.pg
    engine = sa.create_engine(f"postgresql+psycopg://sqlalchemy@{host}:{port}/sextant")
    metadata = sa.MetaData()
    cpu = sa.Table(
        "cpu", metadata,
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.Text),
        sa.Column("usage", sa.Float),
    )
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)"))
        conn.execute(cpu.insert(), [
            {"time": T0 + dt.timedelta(minutes=i), "host": f"web-{i % 2}", "usage": float(i)} for i in range(6)
        ])
        conn.commit()
        q = (
            sa.select(cpu.c.host, sa.func.count().label("n"), sa.func.avg(cpu.c.usage).label("avg_usage"))
            .where(cpu.c.time >= T0 + dt.timedelta(minutes=1))
            .group_by(cpu.c.host)
            .order_by(cpu.c.host)
        )
        assert conn.execute(q).all() == [("web-0", 2, 3.0), ("web-1", 3, 3.0)]
        assert conn.execute(sa.text("SELECT max(usage) FROM cpu WHERE host = :h"), {"h": "web-1"}).scalar() == 5.0
        inspector = sa.inspect(engine)
        assert inspector.get_table_names() == ["cpu"]
        columns = {c["name"]: c for c in inspector.get_columns("cpu")}
        assert list(columns) == ["time", "host", "usage"]
        assert isinstance(columns["time"]["type"], sa.TIMESTAMP) and columns["time"]["type"].timezone
        assert not columns["time"]["nullable"] and columns["host"]["nullable"]
        assert isinstance(columns["usage"]["type"], sa.Float)

    frame = pd.read_sql("SELECT time, host, usage FROM cpu ORDER BY time", engine)
    assert list(frame.columns) == ["time", "host", "usage"]
    assert len(frame) == 6 and frame["usage"].sum() == 15.0
    assert str(frame["time"].dtype).startswith("datetime64") and str(frame["time"].dt.tz) == "UTC"
    frame = pd.read_sql(sa.text("SELECT host, count(*) AS n FROM cpu WHERE usage > :m GROUP BY host ORDER BY host"),
                        engine, params={"m": 1.5})
    assert frame.to_dict("records") == [{"host": "web-0", "n": 2}, {"host": "web-1", "n": 2}]
