"""SQLite's sqllogictest corpus (sqllogictest/sqlite/select1.test to
select5.test), which the Rust sqllogictest suite runs against Sextant,
passes on PostgreSQL 15 with the same runner, the same label
(`postgresql`) and the same options: so the answers Sextant must give are
PostgreSQL's, not ones regenerated from Sextant.
"""

import os
import subprocess
from pathlib import Path

from postgres_reference import Postgres

ROOT = Path(__file__).resolve().parents[2]


def test_sqlite_corpus_passes_on_postgresql_15():
    pg = Postgres().start()
    try:
        env = dict(os.environ, SEXTANT_SLT_POSTGRES=f"host=127.0.0.1 port={pg.port} user=postgres")
        run = subprocess.run(
            ["cargo", "test", "--quiet", "-p", "sextant-sqllogictest", "--test", "sqllogictests"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
        )
        out = run.stdout + run.stderr
        print(out)
        assert run.returncode == 0, out
        for n in range(1, 6):
            assert f"test select{n}.test ... ok" in out, out
        assert "sqllogictest: 5 passed, 0 failed" in out, out
    finally:
        pg.stop()
