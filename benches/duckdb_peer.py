"""DuckDB, the peer of `sextant-load`: the query suite on Sextant's own
Parquet files, then on the same data loaded into a DuckDB database.

Usage: duckdb_peer.py SPEC.json, where SPEC is
  {"tables": {name: parquet glob}, "database": path, "runs": N,
   "queries": [{"name": ..., "sql": ...}]}
Prints {"parquet": [timing], "native": [timing], "load_s": s} on stdout;
a timing is {"cold_ms", "hot_ms" (median of N runs), "rows"}, where "rows"
are the cold run's rows, each value as text (None for NULL), which
sextant-load compares with Sextant's answer. "Cold" is
the first run in a new DuckDB connection (the OS page cache stays warm,
as it does for the other engines).
"""

import json
import statistics
import sys
import time

import duckdb


def timed(con, sql):
    t = time.perf_counter()
    rows = con.execute(sql).fetchall()
    return (time.perf_counter() - t) * 1e3, rows


def text(v):
    """A value as text, as sextant-load compares it (bytes as hex, as
    Sextant shows ids)."""
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def suite(con, queries, runs):
    out = []
    for q in queries:
        cold, rows = timed(con, q["sql"])
        hot = statistics.median(timed(con, q["sql"])[0] for _ in range(runs))
        rows = [[text(v) for v in r] for r in rows]
        out.append({"name": q["name"], "cold_ms": cold, "hot_ms": hot, "rows": rows})
        print(f"  duckdb: {q['name']}: {cold:.1f} ms cold, {hot:.1f} ms hot", file=sys.stderr)
    return out


def connect(path=":memory:"):
    con = duckdb.connect(path)
    con.execute("SET TimeZone = 'UTC'")
    return con


def main():
    spec = json.load(open(sys.argv[1]))
    con = connect()
    for name, glob in spec["tables"].items():
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{glob}')")
    parquet = suite(con, spec["queries"], spec["runs"])
    con.close()

    con = connect(spec["database"])
    t = time.perf_counter()
    for name, glob in spec["tables"].items():
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{glob}')")
    con.execute("CHECKPOINT")
    load_s = time.perf_counter() - t
    con.close()
    con = connect(spec["database"])
    native = suite(con, spec["queries"], spec["runs"])
    json.dump({"parquet": parquet, "native": native, "load_s": load_s}, sys.stdout)


if __name__ == "__main__":
    main()
