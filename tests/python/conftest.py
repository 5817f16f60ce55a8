"""Starts a real sextant server for the Python client tests.

The binary is $SEXTANT_BIN (tests/run-all.sh builds it and sets it). Each
test gets its own server on port 0 with a temporary data directory.
"""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def sextant_bin() -> str:
    env = os.environ.get("SEXTANT_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "sextant")


# Every Server started, so that none outlives its test (a test that ends
# with a restarted server, or fails half way, leaves no process behind).
_started: list = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test():
    yield
    while _started:
        s = _started.pop()
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


class Server:
    def __init__(self, data_dir: Path, extra_args=(), env=None):
        self.data_dir = data_dir
        self.extra_args = list(extra_args)  # more `sextant serve` flags, e.g. ["--max-body-size", "64KiB"]
        self.env = env  # the whole environment of the process; None inherits ours
        self.proc = None
        self.addrs = {}

    def start(self):
        ready = self.data_dir.parent / "ready.json"
        if ready.exists():
            ready.unlink()
        log = open(self.data_dir.parent / "server.log", "ab")
        _started.append(self)
        self.proc = subprocess.Popen(
            [
                sextant_bin(), "serve",
                "--data-dir", str(self.data_dir),
                "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
                "--grpc-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0",
                "--ready-file", str(ready),
                *self.extra_args,
            ],
            stdout=log, stderr=log, env=self.env,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sextant exited:\n" + self.log())
            try:
                self.addrs = json.loads(ready.read_text())
                return
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        raise RuntimeError("sextant not ready in 60 s:\n" + self.log())

    def log(self) -> str:
        return (self.data_dir.parent / "server.log").read_text(errors="replace")

    @property
    def pg(self):
        host, port = self.addrs["pg"].rsplit(":", 1)
        return host, int(port)

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP endpoints (OTLP/HTTP, remote write, line protocol)."""
        return f"http://{self.addrs['http']}"

    @property
    def grpc_endpoint(self) -> str:
        """host:port of the OTLP gRPC endpoint (no scheme, as grpc expects)."""
        if "grpc" not in self.addrs:
            raise RuntimeError(f"the ready file names no gRPC address: {self.addrs}")
        return self.addrs["grpc"]

    def post(self, path: str, body: bytes, headers: dict) -> tuple:
        """POSTs to the HTTP endpoint; returns (status, headers, body) for
        every answer, 4xx and 5xx included."""
        req = urllib.request.Request(self.http_url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def dsn(self) -> str:
        host, port = self.pg
        return f"host={host} port={port} user=sextant dbname=sextant"

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    s = Server(data)
    s.start()
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()
