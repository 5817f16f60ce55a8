"""pgjdbc against sextant: compiles and runs tests/java/JdbcClient.java
(which checks every answer itself) with the Debian package
libpostgresql-jdbc-java, which tests/run-all.sh installs."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JAR = Path("/usr/share/java/postgresql.jar")


def test_pgjdbc(server, tmp_path):
    javac, java = shutil.which("javac"), shutil.which("java")
    if not (javac and java):
        pytest.fail("a JDK (javac, java) is needed: apt-get install default-jdk-headless")
    if not JAR.exists():
        pytest.fail(f"{JAR} is missing: apt-get install libpostgresql-jdbc-java (tests/run-all.sh does)")
    src = ROOT / "tests" / "java" / "JdbcClient.java"
    subprocess.run([javac, "-cp", str(JAR), "-d", str(tmp_path), str(src)], check=True, timeout=120)
    _, port = server.pg
    out = subprocess.run(
        [java, "-cp", f"{JAR}:{tmp_path}", "JdbcClient", str(port)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "jdbc ok" in out.stdout
