"""node-postgres (npm `pg`, pinned in tests/node/package-lock.json and
installed by tests/run-all.sh with `npm ci`) against sextant: runs
tests/node/pg_client.js, which checks every answer itself."""

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def test_node_postgres(server):
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed")
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node` (tests/run-all.sh does)")
    _, port = server.pg
    out = subprocess.run([node, str(NODE_DIR / "pg_client.js"), str(port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "node-postgres ok" in out.stdout
