"""Prometheus remote write into sextant: the real Prometheus server (Debian
package `prometheus`, installed by tests/run-all.sh) scrapes itself and
remote-writes to sextant, configured with docs/ingest.md's `remote_write`
block, and the samples are read back with psycopg.

Metric layout: one table per metric name (`up` -> table `up`), one text
column per label (`job`, `instance`, ...), the sample in a double `value`.
"""

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from test_docs_blocks import ROOT, code_blocks

JOB = "sextant-test-self"
WAIT_S = 60  # Prometheus starts sending only after replaying its WAL (about 5 s)


def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if not path and os.access("/usr/bin/prometheus", os.X_OK):
        path = "/usr/bin/prometheus"
    if not path:
        pytest.fail(
            "the prometheus binary is not installed: run tests/run-all.sh, which installs it "
            "(as root: apt-get install prometheus)"
        )
    return path


def prometheus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"prometheus, version (\S+)", out.stdout + out.stderr)
    assert m, f"cannot read the version from `{binary} --version`: {out.stdout!r} {out.stderr!r}"
    return m.group(1)  # e.g. "2.42.0+ds", the same string as prometheus_build_info{version}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doc_yaml(doc: str, key: str) -> str:
    """The ```yaml block of `doc` that starts with `key:`, as the document
    shows it (so the configuration users copy is the one tested)."""
    blocks = [b for b in code_blocks((ROOT / doc).read_text(), "yaml") if b.startswith(f"{key}:")]
    assert len(blocks) == 1, f"{doc}: {len(blocks)} yaml blocks start with {key}:"
    return blocks[0]


class Prometheus:
    def __init__(self, binary, tmp_path, http_url, scrape=None):
        """Remote-writes what it scrapes to the Sextant at `http_url` with
        docs/ingest.md's `remote_write` block; scrapes itself (job `JOB`),
        or, with `scrape` (a Sextant's HTTP host:port), that Sextant's
        /metrics with docs/observability.md's `scrape_configs` block (job
        `sextant`). Every second, so that the test does not wait."""
        self.binary = binary
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.config = tmp_path / "prometheus.yml"
        self.log_path = tmp_path / "prometheus.log"
        if scrape:
            self.job = "sextant"
            scrape_configs = doc_yaml("docs/observability.md", "scrape_configs")
            assert '"sextant:4318"' in scrape_configs, scrape_configs
            scrape_configs = scrape_configs.replace('"sextant:4318"', f'"{scrape}"')
        else:
            self.job = JOB
            scrape_configs = (
                f"scrape_configs:\n  - job_name: {JOB}\n"
                f"    static_configs:\n      - targets: [\"{self.target}\"]\n"
            )
        remote_write = doc_yaml("docs/ingest.md", "remote_write")
        assert "http://127.0.0.1:4318/" in remote_write, remote_write
        remote_write = remote_write.replace("http://127.0.0.1:4318", http_url)
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + scrape_configs + remote_write
        )
        self.data = tmp_path / "prometheus-data"
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address={self.target}",
            ],
            stdout=log, stderr=log,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(server, tmp_path):
    p = Prometheus(prometheus_bin(), tmp_path, server.http_url)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def logs(server, prom) -> str:
    return (
        "\n--- prometheus log (tail) ---\n" + prom.log()[-4000:]
        + "\n--- sextant log (tail) ---\n" + server.log()[-4000:]
    )


def wait_for_rows(conn, sql, server, prom) -> int:
    """Polls `sql` (a count) until it is positive; a missing table counts as
    not yet (the table is created by the first write)."""
    deadline = time.time() + WAIT_S
    last = None
    while time.time() < deadline:
        if prom.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {prom.proc.returncode}" + logs(server, prom))
        try:
            n = conn.execute(sql).fetchone()[0]
            if n > 0:
                return n
            last = f"{n} rows"
        except psycopg.errors.UndefinedTable as e:
            last = str(e).strip()
        time.sleep(0.5)
    pytest.fail(f"no rows for {sql!r} after {WAIT_S} s (last: {last})" + logs(server, prom))


def test_prometheus_remote_write(server, prometheus):
    version = prometheus_version(prometheus.binary)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        wait_for_rows(conn, "SELECT count(*) FROM up", server, prometheus)
        wait_for_rows(conn, "SELECT count(*) FROM prometheus_build_info", server, prometheus)

        rows = conn.execute("SELECT value, instance, time FROM up WHERE job = %s", (JOB,)).fetchall()
        assert rows, conn.execute("SELECT * FROM up").fetchall()
        # Prometheus scrapes itself: every `up` sample of the job is 1.
        assert {r[0] for r in rows} == {1.0}, rows
        assert all(isinstance(r[0], float) for r in rows), rows
        assert {r[1] for r in rows} == {prometheus.target}, rows
        # Sample timestamps are milliseconds since the epoch: they must land now, not in 1970 or 2500.
        now = dt.datetime.now(dt.timezone.utc)
        for r in rows:
            assert abs(r[2] - now) < dt.timedelta(minutes=5), (r, now)

        versions = conn.execute(
            "SELECT DISTINCT version FROM prometheus_build_info WHERE job = %s", (JOB,)
        ).fetchall()
        assert versions == [(version,)], (versions, version)


def test_remote_write_rejects_bad_snappy(server):
    status, _, body = server.post(
        "/api/v1/write",
        b"garbage",
        {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
    )
    assert status == 400, (status, body)
    error = json.loads(body)["error"]
    assert "snappy" in error.lower(), error
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


class FlakyProxy:
    """Between Prometheus and Sextant: forwards every remote-write request,
    and answers 500 to the first one Sextant accepted (its samples are
    written), as a proxy or network that loses an answer does. Prometheus
    then sends that request again."""

    def __init__(self, target: str):
        self.target = target
        self.lock = threading.Lock()
        self.failed = None  # the body answered 500 after Sextant wrote it
        self.resent = 0  # how many times Prometheus sent it again
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {
                    k: v for k, v in self.headers.items()
                    if k.lower() in ("content-encoding", "content-type", "user-agent")
                    or k.lower().startswith("x-prometheus")
                }
                req = urllib.request.Request(proxy.target + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, out = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, out = e.code, e.read()
                with proxy.lock:
                    proxy.requests += 1
                    if status == 204 and proxy.failed is None:
                        proxy.failed = body
                        status, out = 500, b"the answer was lost on the way (a test)"
                    elif proxy.failed is not None and body == proxy.failed:
                        proxy.resent += 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_retried_remote_write_adds_no_samples(server, tmp_path):
    """A request Sextant wrote but whose answer Prometheus did not get is
    sent again (Prometheus retries 5xx): every table of remote write is
    keyed by labels and time, so the second copy replaces the first."""
    proxy = FlakyProxy(server.http_url)
    prom = Prometheus(prometheus_bin(), tmp_path, proxy.url)
    prom.start()
    try:
        deadline = time.time() + WAIT_S
        while time.time() < deadline and proxy.resent == 0:
            if prom.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {prom.proc.returncode}" + logs(server, prom))
            time.sleep(0.2)
        assert proxy.resent > 0, (
            f"Prometheus did not resend the failed request ({proxy.requests} requests)" + logs(server, prom)
        )
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            wait_for_rows(conn, "SELECT count(*) FROM up", server, prom)
            tables = [
                r[0] for r in conn.execute(
                    "SELECT table_name FROM system.tables WHERE key IS NOT NULL ORDER BY 1"
                ).fetchall()
            ]
            assert "up" in tables, tables
            checked = 0
            for t in tables:
                # A sample stored twice is two equal rows (read in one
                # query: Prometheus keeps writing meanwhile).
                rows = conn.execute(f'SELECT * FROM "{t}"').fetchall()
                twice = [r for r in set(rows) if rows.count(r) > 1]
                assert not twice, f"{t}: samples stored twice: {twice[:5]}" + logs(server, prom)
                checked += len(rows)
            assert checked > 0
            print(f"{len(tables)} tables, {checked} samples, no duplicates; "
                  f"the failed request was resent {proxy.resent} time(s) of {proxy.requests}")
    finally:
        prom.stop()
        proxy.close()
