"""TLS on every listener with a self-signed certificate the test makes
(openssl): psql with sslmode=verify-full, curl --cacert, ADBC grpc+tls, the
OpenTelemetry SDK's gRPC exporter with root certificates, and a certificate
reload on SIGHUP.
"""

import shutil
import signal
import ssl
import subprocess
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import grpc
import pytest
from conftest import Server
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from test_otel_sdk import RecordingSpanExporter


def make_cert(directory, name):
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    first = make_cert(certs, "first")
    second = make_cert(certs, "second")
    # The server reads these two paths, at start and on SIGHUP.
    cert, key = certs / "server.pem", certs / "server.key"
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    data = tmp_path / "data"
    data.mkdir()
    server = Server(data, extra_args=["--tls-cert", str(cert), "--tls-key", str(key)])
    server.start()
    yield server, first, second, (cert, key)
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


def port(server, name):
    return server.addrs[name].rsplit(":", 1)[1]


def psql(server, root, sql, sslmode="verify-full", user="sextant", password=""):
    dsn = (f"host=localhost hostaddr=127.0.0.1 port={port(server, 'pg')} dbname=sextant user={user} "
           f"sslmode={sslmode} sslrootcert={root}")
    return subprocess.run(["psql", "-X", "-At", dsn, "-c", sql], capture_output=True, text=True,
                          timeout=30, env={"PGPASSWORD": password, "PATH": "/usr/bin:/bin"})


def curl(*args):
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
                         capture_output=True, text=True, timeout=30)
    body, _, code = out.stdout.rpartition("\n")
    return out.returncode, int(code or 0), body


def served_cert(server, name):
    return ssl.get_server_certificate(("127.0.0.1", int(port(server, name))))


def same_cert(pem_a, pem_b):
    return ssl.PEM_cert_to_DER_cert(pem_a) == ssl.PEM_cert_to_DER_cert(pem_b)


def test_psql_verify_full_and_plain_connections_refused(tls):
    server, (cert, _), (other, _), _ = tls
    ok = psql(server, cert, "CREATE TABLE t (time TIMESTAMP NOT NULL, v BIGINT); SELECT 1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("1")
    # With users, the password travels inside TLS (SCRAM on top).
    assert psql(server, cert, "CREATE USER root WITH SUPERUSER PASSWORD 'pw'").returncode == 0
    ok = psql(server, cert, "SELECT current_user", user="root", password="pw")
    assert ok.returncode == 0 and ok.stdout.strip() == "root", ok.stderr
    plain = psql(server, cert, "SELECT 1", sslmode="disable", user="root", password="pw")
    assert plain.returncode == 2
    assert "this server requires TLS" in plain.stderr, plain.stderr
    wrong_root = psql(server, other, "SELECT 1", user="root", password="pw")
    assert wrong_root.returncode == 2
    assert "certificate verify failed" in wrong_root.stderr, wrong_root.stderr


def test_curl_cacert_and_adbc_grpc_tls_and_otel_grpc(tls):
    server, (cert, _), _, _ = tls
    url = f"https://localhost:{port(server, 'http')}"
    rc, code, body = curl("--cacert", str(cert), url + "/health")
    assert (rc, code) == (0, 200) and '"ok"' in body
    rc, code, _ = curl("--cacert", str(cert), "-X", "POST", "--data-binary", "cpu,host=a usage=1", url + "/api/v2/write")
    assert (rc, code) == (0, 204)
    # No trust in the certificate: curl refuses it (60: peer certificate).
    rc, _, _ = curl(url + "/health")
    assert rc == 60
    # Plain HTTP to the TLS port gets no HTTP answer.
    rc, code, _ = curl(f"http://127.0.0.1:{port(server, 'http')}/health")
    assert code != 200

    roots = cert.read_text()
    kwargs = {adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: roots}
    uri = f"grpc+tls://localhost:{port(server, 'flight')}"
    with flight_sql.connect(uri, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT host, usage FROM cpu")
        assert cur.fetchall() == [("a", 1.0)]

    exporter = grpc_traces.OTLPSpanExporter(
        endpoint=f"localhost:{port(server, 'grpc')}", timeout=10,
        credentials=grpc.ssl_channel_credentials(root_certificates=cert.read_bytes()),
    )
    out = RecordingSpanExporter(exporter)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(out))
    with provider.get_tracer("t").start_as_current_span("over tls"):
        pass
    provider.shutdown()
    assert [r for _, r in out.results] == [SpanExportResult.SUCCESS]
    ok = psql(server, cert, "SELECT name FROM otel_traces")
    assert ok.stdout.strip() == "over tls", ok.stderr


def test_sighup_reloads_the_certificate(tls):
    server, (first, _), (second, second_key), (cert, key) = tls
    for name in ["http", "grpc", "flight"]:
        assert same_cert(served_cert(server, name), first.read_text()), name
    # A file that does not load leaves the old certificate in place.
    cert.write_text("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "TLS certificate not reloaded" not in server.log():
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    assert same_cert(served_cert(server, "http"), first.read_text())

    shutil.copy(second, cert)
    shutil.copy(second_key, key)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "TLS certificate reloaded" not in server.log():
        assert time.time() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    for name in ["http", "grpc", "flight"]:
        assert same_cert(served_cert(server, name), second.read_text()), name
    assert psql(server, second, "SELECT 1").returncode == 0
    assert psql(server, first, "SELECT 1").returncode == 2
    assert server.proc.poll() is None


def test_a_certificate_that_does_not_load_stops_the_start(tmp_path):
    from conftest import sextant_bin

    first = make_cert(tmp_path, "first")
    second = make_cert(tmp_path, "second")
    for cert, key, expect in [
        (tmp_path / "missing.pem", first[1], "cannot read the certificate"),
        (first[0], second[1], "does not belong to the certificate"),
        (first[1], first[1], "holds no PEM certificate"),
    ]:
        out = subprocess.run(
            [sextant_bin(), "serve", "--data-dir", str(tmp_path / "data"), "--pg-addr", "127.0.0.1:0",
             "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0",
             "--tls-cert", str(cert), "--tls-key", str(key)],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 1, out.stderr
        assert expect in out.stderr, out.stderr
        assert str(cert) in out.stderr or str(key) in out.stderr, out.stderr
    out = subprocess.run([sextant_bin(), "serve", "--tls-cert", str(first[0])], capture_output=True, text=True)
    assert out.returncode == 2 and "--tls-key" in out.stderr, out.stderr
