"""psql (the PostgreSQL 15 client installed on the machine) against sextant:
the meta-commands people type (\\l, \\dn, \\dt, \\d, \\d+, \\dv, \\dm, \\df),
\\x and \\timing, and \\copy in both directions (COPY FROM STDIN and COPY TO
STDOUT, text and CSV) through the WAL.
"""

import shutil
import subprocess

import psycopg
import pytest

TABLE = (
    "CREATE TABLE m (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION, cores BIGINT, "
    "up BOOLEAN, load REAL, n INTEGER, price NUMERIC(10,2), day DATE, payload JSONB)"
)


def psql(server, *commands, check=True):
    """Runs psql with `commands` (each a -c) and returns its output."""
    binary = shutil.which("psql")
    if not binary:
        pytest.fail("psql is not installed (apt-get install postgresql-client)")
    host, port = server.pg
    args = [binary, "-X", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port), "-U", "psql", "-d", "sextant"]
    for c in commands:
        args += ["-c", c]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, (commands, out.stdout, out.stderr)
    return out


def test_meta_commands(server):
    psql(server, TABLE)
    out = psql(server, "\\d m").stdout
    for col, ty in [
        ("time", "timestamp with time zone"), ("host", "text"), ("usage", "double precision"),
        ("cores", "bigint"), ("up", "boolean"), ("load", "real"), ("n", "integer"), ("price", "numeric(10,2)"),
        ("day", "date"), ("payload", "jsonb"),
    ]:
        assert any(line.split("|")[0].strip() == col and line.split("|")[1].strip() == ty
                   for line in out.splitlines() if "|" in line), (col, ty, out)
    assert 'Table "public.m"' in out
    time_line = next(line for line in out.splitlines() if line.split("|")[0].strip() == "time")
    assert "not null" in time_line, out
    plus = psql(server, "\\d+ m").stdout
    assert "Storage" in plus and "double precision" in plus, plus

    listing = psql(server, "\\dt").stdout
    assert " public | m    | table" in listing, listing
    assert "sextant" in psql(server, "\\l").stdout
    schemas = psql(server, "\\dn").stdout
    assert " public " in schemas and " system " in schemas, schemas
    views = psql(server, "\\dv").stdout
    assert " system | files " in views, views
    assert "Did not find any relations." in psql(server, "\\dm").stdout + psql(server, "\\dm").stderr
    functions = psql(server, "\\df").stdout
    assert "List of functions" in functions, functions


def test_materialized_views_in_psql(server):
    psql(
        server,
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)",
        "INSERT INTO cpu VALUES ('2024-01-01T00:00:10Z', 'a', 10), ('2024-01-01T00:00:20Z', 'a', 30)",
        "CREATE MATERIALIZED VIEW cpu_1m AS SELECT date_bin(INTERVAL '1 minute', time) AS time, host, "
        "avg(usage) AS avg FROM cpu GROUP BY 1, 2",
    )
    listing = psql(server, "\\dm").stdout
    assert " public | cpu_1m | materialized view " in listing, listing
    assert "cpu " not in listing.replace("cpu_1m", ""), listing
    described = psql(server, "\\d cpu_1m").stdout
    assert 'Materialized view "public.cpu_1m"' in described, described
    assert "double precision" in described, described
    # \\d+ shows the view's definition, as PostgreSQL prints one.
    plus = psql(server, "\\d+ cpu_1m").stdout
    assert "View definition:" in plus, plus
    definition = plus.split("View definition:")[1]
    assert "SELECT date_bin(INTERVAL '1 minute', time) AS time" in definition and "GROUP BY 1, 2;" in definition, plus
    # REFRESH through psql, and the view's rows.
    out = psql(server, "REFRESH MATERIALIZED VIEW cpu_1m", "SELECT host, avg FROM cpu_1m").stdout
    assert "REFRESH MATERIALIZED VIEW" in out, out
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith(" a ")] == ["20"], out


def test_views_and_reference_tables_in_psql(server):
    """A plain view and a reference table, as psql lists and describes them."""
    psql(
        server,
        "CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE PRECISION)",
        "CREATE TABLE hosts (host TEXT, team TEXT)",
        "INSERT INTO cpu VALUES ('2024-01-01T00:00:10Z', 'a', 10), ('2024-01-01T00:00:20Z', 'b', 30)",
        "INSERT INTO hosts VALUES ('a', 'web'), ('b', 'db')",
        "CREATE VIEW by_team AS SELECT h.team, max(c.usage) AS peak FROM cpu c JOIN hosts h "
        "ON c.host = h.host GROUP BY h.team",
    )
    views = psql(server, "\\dv").stdout
    assert " public | by_team " in views and "| view " in views, views
    tables = psql(server, "\\dt").stdout
    assert " public | hosts | table " in tables, tables
    described = psql(server, "\\d hosts").stdout
    assert " host   | text " in described and " team   | text " in described and "time" not in described, described
    plus = psql(server, "\\d+ by_team").stdout
    assert 'View "public.by_team"' in plus and "View definition:" in plus, plus
    assert "JOIN hosts h ON c.host = h.host GROUP BY h.team;" in plus.split("View definition:")[1], plus
    out = psql(server, "SELECT team, peak FROM by_team ORDER BY team").stdout
    assert [line.split("|")[1].strip() for line in out.splitlines() if line.startswith(" db ") or line.startswith(" web ")] == ["30", "10"], out


def test_table_sizes(server):
    """\\dt+ and the size functions answer from the table's Parquet files,
    which system.files lists: nothing before FLUSH, their bytes after."""
    psql(server, "CREATE TABLE sized (time TIMESTAMP NOT NULL, host TEXT, v DOUBLE PRECISION)",
         "INSERT INTO sized SELECT to_timestamp(i), 'h' || (i % 7), i FROM generate_series(1, 5000) t(i)")
    size = "SELECT pg_relation_size('sized'::regclass), pg_total_relation_size('sized'::regclass)"
    assert psql(server, "\\pset tuples_only on", size).stdout.split() == ["0", "|", "0"]
    psql(server, "FLUSH TABLE sized")
    files = psql(server, "\\pset tuples_only on",
                 "SELECT sum(bytes) FROM system.files WHERE table_name = 'sized'").stdout.split()
    total = int(files[-1])
    assert total > 1000, files
    got = psql(server, "\\pset tuples_only on", size).stdout.split()
    assert got == [str(total), "|", str(total)], got
    # Postgres' own units and rounding (PostgreSQL 15: 10 kB and up in kB).
    pretty = f"{(total + 512) // 1024} kB" if total >= 10240 else f"{total} bytes"
    listing = psql(server, "\\dt+ sized").stdout
    line = next(l for l in listing.splitlines() if " sized " in l)
    assert line.split("|")[6].strip() == pretty, listing
    # An oid that names no relation is NULL, as in Postgres; a name works
    # as in Postgres (the literal is a regclass), and an unknown name is 42P01.
    out = psql(server, "\\pset tuples_only on", "SELECT pg_relation_size(1) IS NULL").stdout
    assert out.split()[-1] == "t", out
    out = psql(server, "\\pset tuples_only on", "SELECT pg_relation_size('sized'), pg_table_size('public.sized')")
    assert out.stdout.split() == [str(total), "|", str(total)], out.stdout
    out = psql(server, "SELECT pg_relation_size('nosuch')", check=False)
    assert out.returncode != 0 and 'relation "nosuch" does not exist' in out.stderr, out.stderr


def test_expanded_output_and_timing(server):
    psql(server, TABLE, "INSERT INTO m (time, host, usage) VALUES ('2024-01-01T00:00:00Z', 'web-1', 42.5)")
    out = psql(server, "\\x on", "SELECT host, usage FROM m").stdout
    assert "-[ RECORD 1 ]" in out and "host  | web-1" in out, out
    out = psql(server, "\\timing on", "SELECT count(*) FROM m").stdout
    assert "Time: " in out, out


def test_copy_from_and_to_files(server, tmp_path):
    psql(server, TABLE)
    text_in = tmp_path / "in.txt"
    text_in.write_text(
        "2024-01-01 00:00:00+00\tweb-1\t1.5\t8\tt\t\\N\t1\t12.34\t2024-01-01\t{\"a\": 1}\n"
        "2024-01-01 00:00:01+00\tweb\\t2\t\\N\t\\N\tf\t0.5\t2\t\\N\t\\N\t\\N\n"
    )
    csv_in = tmp_path / "in.csv"
    csv_in.write_text(
        "time,host,usage,up\n"
        "2024-01-01T00:00:02Z,\"web,3\",2.5,true\n"
        "2024-01-01T00:00:03Z,\"multi\nline\",,false\n"
    )
    out = psql(server, f"\\copy m FROM '{text_in}'").stdout
    assert "COPY 2" in out, out
    out = psql(server, f"\\copy m (time, host, usage, up) FROM '{csv_in}' WITH (FORMAT csv, HEADER)").stdout
    assert "COPY 2" in out, out

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT host, usage, cores, up, payload FROM m ORDER BY time").fetchall()
    assert rows == [
        ("web-1", 1.5, 8, True, {"a": 1}),
        ("web\t2", None, None, False, None),
        ("web,3", 2.5, None, True, None),
        ("multi\nline", None, None, False, None),
    ]

    # Out again, as CSV with a header and as text: what went in comes out.
    csv_out = tmp_path / "out.csv"
    out = psql(server, f"\\copy (SELECT host, usage, up FROM m ORDER BY time) TO '{csv_out}' WITH (FORMAT csv, HEADER)").stdout
    assert "COPY 4" in out, out
    assert csv_out.read_text() == 'host,usage,up\nweb-1,1.5,t\nweb\t2,,f\n"web,3",2.5,t\n"multi\nline",,f\n'
    text_out = tmp_path / "out.txt"
    psql(server, f"\\copy m TO '{text_out}'")
    lines = text_out.read_text().splitlines()
    # (A whole table comes out in no fixed order.)
    assert len(lines) == 4 and "web\\t2" in [line.split("\t")[1] for line in lines], lines
    # ... and loads back into the table it came from.
    out = psql(server, f"\\copy m FROM '{text_out}'").stdout
    assert "COPY 4" in out, out

    # A value that does not parse names its line and column; nothing of
    # that COPY is written, and the server keeps serving.
    bad = tmp_path / "bad.txt"
    bad.write_text("2024-01-02 00:00:00+00\tok\t1\n2024-01-02 00:00:01+00\tbad\tnot-a-number\n")
    out = psql(server, f"\\copy m (time, host, usage) FROM '{bad}'", check=False)
    assert out.returncode != 0
    assert 'line 2, column usage: invalid input syntax for type float8: "not-a-number"' in out.stderr, out.stderr
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM m").fetchone()[0] == 8
