"""Authentication and authorization with real clients on every protocol:
psql and psycopg (SCRAM-SHA-256), curl (Basic and Bearer), the
OpenTelemetry SDK exporters (an `authorization` header, gRPC and HTTP) and
ADBC Flight SQL (a token, and a user's name and password).

Each test starts its own server, makes the first user (an admin) over the
loopback connection that needs no password yet, and from then on every
client must log in. A read-only user is refused every way of writing; a
revoked or expired token stops working at once.
"""

import base64
import hashlib
import json
import os
import subprocess
import time
import uuid

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import psycopg
import pyarrow as pa
import pytest
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from test_otel_sdk import RecordingSpanExporter

ROOT_PW = "r00t-Secret!"
READER_PW = "reader pass"
WRITER_PW = "wr1ter"


def dsn(server, user, password):
    host, port = server.pg
    return f"host={host} port={port} dbname=sextant user={user} password='{password}'"


def admin(server):
    return psycopg.connect(dsn(server, "root", ROOT_PW), autocommit=True)


@pytest.fixture
def secured(server):
    """A server with users: root (admin), reader (SELECT on the database),
    writer (INSERT on cpu only), ingester (INSERT on the database)."""
    host, port = server.pg
    # No user yet: loopback gets in without a password, and the connection
    # that makes the first (admin) user goes on as it.
    with psycopg.connect(f"host={host} port={port} dbname=sextant user=setup", autocommit=True) as c:
        c.execute("CREATE TABLE cpu (time TIMESTAMP NOT NULL, host TEXT, usage DOUBLE)")
        c.execute("INSERT INTO cpu VALUES ('2024-01-01T00:00:00Z', 'a', 1.5)")
        c.execute(f"CREATE USER root WITH SUPERUSER PASSWORD '{ROOT_PW}'")
        c.execute(f"CREATE USER reader WITH PASSWORD '{READER_PW}'")
        c.execute(f"CREATE USER writer WITH PASSWORD '{WRITER_PW}'")
        c.execute("CREATE USER ingester WITH PASSWORD 'ingest-pw'")
        c.execute("GRANT SELECT ON DATABASE sextant TO reader")
        c.execute("GRANT INSERT ON cpu TO writer")
        c.execute("GRANT INSERT ON ALL TABLES TO ingester")
    return server


def token(server, name, user, extra=""):
    with admin(server) as c:
        row = c.execute(f"CREATE TOKEN {name} FOR USER {user} {extra}").fetchone()
    assert row[0] == name and row[1] == user and row[2].startswith("sxt_"), row
    return row[2]


def psql(server, user, password, sql, **env):
    host, port = server.pg
    return subprocess.run(
        ["psql", "-X", "-h", host, "-p", str(port), "-U", user, "-d", "sextant", "-At", "-c", sql],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password, **env},
        timeout=30,
    )


def curl(*args):
    out = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=30,
    )
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


# ---------------------------------------------------------------------------
# pgwire


def test_psql_logs_in_with_scram_and_wrong_credentials_look_alike(secured):
    ok = psql(secured, "reader", READER_PW, "SELECT current_user, count(*) FROM cpu")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "reader|1"

    wrong = psql(secured, "reader", "nope", "SELECT 1")
    assert wrong.returncode == 2
    assert 'FATAL:  password authentication failed for user "reader"' in wrong.stderr
    unknown = psql(secured, "mallory", "nope", "SELECT 1")
    assert unknown.returncode == 2
    assert 'FATAL:  password authentication failed for user "mallory"' in unknown.stderr
    # SCRAM, without channel binding (there is no TLS to bind to).
    forced = psql(secured, "reader", READER_PW, "SELECT 1", PGCHANNELBINDING="require")
    assert forced.returncode == 2 and "channel binding" in forced.stderr, forced.stderr

    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(dsn(secured, "reader", "nope"))
    assert 'FATAL:  password authentication failed for user "reader"' in str(e.value)
    with psycopg.connect(dsn(secured, "reader", READER_PW)) as c:
        assert c.execute("SELECT current_user").fetchone() == ("reader",)
        # The SCRAM exchange happened (the server proved it has the verifier).
        assert c.info.parameter_status("is_superuser") == "off"
    with admin(secured) as c:
        assert c.info.parameter_status("is_superuser") == "on"
        # Failed logins are recorded.
        failed = c.execute(
            "SELECT value FROM system.metrics WHERE name = 'sextant_logins_total' "
            "AND labels = '{outcome=\"failed\",protocol=\"pgwire\"}'"
        ).fetchall()
        assert failed and failed[0][0] >= 3, failed
    assert 'login failed' in secured.log() and 'user=mallory' in secured.log().replace('"', '')
    # Passwords stay out of system.queries and the log.
    with admin(secured) as c:
        texts = [r[0] for r in c.execute("SELECT query FROM system.queries").fetchall()]
    assert any(t.startswith("CREATE USER root WITH SUPERUSER PASSWORD '***'") for t in texts), texts
    assert not any(ROOT_PW in t or READER_PW in t for t in texts)
    assert ROOT_PW not in secured.log() and READER_PW not in secured.log()


def test_md5_for_old_clients_when_the_user_asks_for_it(secured):
    """A user created with MD5 is asked for an MD5 password by pgwire (libpq's
    require_auth shows which method the server asked for); every other user
    keeps SCRAM. A new password without MD5 goes back to SCRAM."""
    host, port = secured.pg
    with admin(secured) as c:
        c.execute("CREATE USER legacy WITH PASSWORD 'old-client pw' MD5")
        c.execute("GRANT SELECT ON DATABASE sextant TO legacy")
        # A hash as pg_dumpall prints it is kept as is.
        digest = hashlib.md5(b"dumped pw" + b"dumped").hexdigest()
        c.execute(f"CREATE USER dumped WITH PASSWORD 'md5{digest}'")
        c.execute("GRANT SELECT ON DATABASE sextant TO dumped")
        methods = dict(c.execute("SELECT user_name, auth_method FROM system.users").fetchall())
    assert methods == {
        "root": "scram-sha-256", "reader": "scram-sha-256", "writer": "scram-sha-256",
        "ingester": "scram-sha-256", "legacy": "md5", "dumped": "md5",
    }, methods

    def connect(user, password, method):
        return psycopg.connect(dsn(secured, user, password) + f" require_auth={method}")

    for user, password in [("legacy", "old-client pw"), ("dumped", "dumped pw")]:
        with connect(user, password, "md5") as c:
            assert c.execute("SELECT current_user, count(*) FROM cpu").fetchone() == (user, 1)
        # The server asks this user for MD5, not SCRAM.
        with pytest.raises(psycopg.OperationalError) as e:
            connect(user, password, "scram-sha-256")
        assert "server requested a hashed password" in str(e.value), e.value
        with pytest.raises(psycopg.OperationalError) as e:
            connect(user, "wrong", "md5")
        assert f'FATAL:  password authentication failed for user "{user}"' in str(e.value)
        # psql (libpq 15) logs in too, and a wrong password looks the same.
        ok = psql(secured, user, password, "SELECT current_user")
        assert ok.returncode == 0 and ok.stdout.strip() == user, ok.stderr
        wrong = psql(secured, user, "wrong", "SELECT 1")
        assert f'FATAL:  password authentication failed for user "{user}"' in wrong.stderr
        # HTTP Basic checks the same password.
        code, _ = curl("-u", f"{user}:{password}", f"{secured.http_url}/metrics")
        assert code == 200, code
        code, _ = curl("-u", f"{user}:wrong", f"{secured.http_url}/metrics")
        assert code == 401, code

    # The others stay on SCRAM: an MD5-only client cannot log them in.
    with pytest.raises(psycopg.OperationalError) as e:
        connect("reader", READER_PW, "md5")
    assert "server requested SASL authentication" in str(e.value), e.value
    # An unknown user is asked for SCRAM, like one who exists.
    with pytest.raises(psycopg.OperationalError) as e:
        connect("nobody", "x", "md5")
    assert "server requested SASL authentication" in str(e.value), e.value

    # A new password without MD5: SCRAM from now on.
    with admin(secured) as c:
        c.execute("ALTER USER legacy PASSWORD 'new pw'")
    with connect("legacy", "new pw", "scram-sha-256") as c:
        assert c.execute("SELECT current_user").fetchone() == ("legacy",)
    with pytest.raises(psycopg.OperationalError):
        connect("legacy", "new pw", "md5")
    assert "old-client pw" not in secured.log() and "dumped pw" not in secured.log()


def test_a_read_only_user_cannot_write_by_any_path(secured):
    denied = "42501"
    with psycopg.connect(dsn(secured, "reader", READER_PW), autocommit=True) as c:
        assert c.execute("SELECT host, usage FROM cpu").fetchall() == [("a", 1.5)]
        for sql in [
            "INSERT INTO cpu VALUES ('2024-01-01T00:00:01Z', 'b', 2)",
            "INSERT INTO cpu SELECT * FROM cpu",
            "CREATE TABLE mine (time TIMESTAMP NOT NULL, v DOUBLE)",
            "DROP TABLE cpu",
            "ALTER TABLE cpu SET (retention = '1 day')",
            "FLUSH TABLE cpu",
            "CREATE USER eve WITH PASSWORD 'x'",
            "GRANT INSERT ON cpu TO reader",
            "CREATE TOKEN t FOR USER root",
            "CREATE VIEW v AS SELECT 1",
            "CREATE MATERIALIZED VIEW mv AS SELECT host FROM cpu",
            "CREATE ALERT a AS SELECT 1 AS x EVERY '1 minute' NOTIFY WEBHOOK 'http://127.0.0.1:9/'",
        ]:
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            assert e.value.sqlstate == denied, (sql, e.value.sqlstate, str(e.value))
            assert "permission denied" in str(e.value)
        # Prepared (extended protocol) INSERT with parameters.
        with pytest.raises(psycopg.Error) as e:
            c.execute("INSERT INTO cpu VALUES (%s, %s, %s)", ("2024-01-01T00:00:02Z", "c", 3.0))
        assert e.value.sqlstate == denied
        # COPY FROM STDIN.
        with pytest.raises(psycopg.Error) as e:
            with c.cursor().copy("COPY cpu (time, host, usage) FROM STDIN") as cp:
                cp.write_row(("2024-01-01T00:00:03Z", "d", 4.0))
        assert e.value.sqlstate == denied
        # System tables: only what is the reader's.
        assert c.execute("SELECT user_name FROM system.users").fetchall() == [("reader",)]
        assert c.execute("SELECT user_name, privilege FROM system.grants").fetchall() == [
            ("reader", "SELECT")
        ]
        assert c.execute("SELECT count(*) FROM system.wal").fetchone() == (0,)
        users = {r[0] for r in c.execute("SELECT DISTINCT user_name FROM system.queries").fetchall()}
        assert users == {"reader"}, users
        # The reader may change its own password, and nobody else's.
        c.execute("ALTER USER reader WITH PASSWORD 'new reader pass'")
        with pytest.raises(psycopg.Error) as e:
            c.execute("ALTER USER writer WITH PASSWORD 'x'")
        assert e.value.sqlstate == denied

    reader = base64.b64encode(b"reader:new reader pass").decode()
    # HTTP ingest (line protocol, JSON, OTLP/HTTP) with the reader's password.
    for path, body, ctype in [
        ("/api/v2/write", "cpu,host=e usage=5", "text/plain"),
        ("/v1/ingest/cpu", '{"time": "2024-01-01T00:00:05Z", "host": "e"}', "application/x-ndjson"),
    ]:
        code, text = curl("-X", "POST", "-H", f"Authorization: Basic {reader}", "-H",
                          f"Content-Type: {ctype}", "--data-binary", body, secured.http_url + path)
        assert code == 403, (path, code, text)
        assert "permission denied" in text and '"error"' in text
    # OTLP/HTTP answers in google.rpc.Status: PERMISSION_DENIED (7) with the
    # 403, and UNAUTHENTICATED (16) with a 401, as OTLP/gRPC would.
    for creds, status, rpc_code in [(f"Basic {reader}", 403, 7), ("Basic " + base64.b64encode(b"reader:wrong").decode(), 401, 16)]:
        code, text = curl("-X", "POST", "-H", f"Authorization: {creds}", "-H", "Content-Type: application/json",
                          "--data-binary", '{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}]}]}', secured.http_url + "/v1/logs")
        assert code == status, (code, text)
        assert json.loads(text)["code"] == rpc_code, text
    # Flight SQL: a query works, an INSERT and a bulk ingest do not.
    db_kwargs = {"username": "reader", "password": "new reader pass"}
    with flight_sql.connect(f"grpc://{secured.addrs['flight']}", db_kwargs=db_kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM cpu")
            assert cur.fetchall() == [(1,)]
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.execute("INSERT INTO cpu VALUES ('2024-01-01T00:00:06Z', 'f', 6)")
            assert "permission denied" in str(e.value)
            data = pa.table({
                "time": pa.array([1_704_067_207_000_000_000], pa.timestamp("ns", tz="UTC")),
                "host": ["g"], "usage": [7.0],
            })
            with pytest.raises(adbc_driver_manager.Error) as e:
                cur.adbc_ingest("cpu", data, mode="append")
            assert "permission denied" in str(e.value)
    with admin(secured) as c:
        assert c.execute("SELECT count(*) FROM cpu").fetchone() == (1,)


# ---------------------------------------------------------------------------
# HTTP


def test_curl_basic_and_bearer_and_tokens_that_stop_at_once(secured):
    url = secured.http_url + "/api/v2/write"
    code, body = curl("-X", "POST", "--data-binary", "cpu,host=h usage=1", url)
    assert code == 401 and "authentication required" in body
    code, body = curl("-u", "writer:wrong", "-X", "POST", "--data-binary", "cpu,host=h usage=1", url)
    assert code == 401 and 'password authentication failed for user \\"writer\\"' in body
    code, _ = curl("-u", f"writer:{WRITER_PW}", "-X", "POST", "--data-binary", "cpu,host=h usage=1", url)
    assert code == 204
    # writer may write cpu only.
    code, body = curl("-u", f"writer:{WRITER_PW}", "-X", "POST", "--data-binary", "mem,host=h used=1", url)
    assert code == 403 and 'table \\"mem\\"' in body
    # /health needs no credentials; /metrics does.
    assert curl(secured.http_url + "/health")[0] == 200
    assert curl(secured.http_url + "/metrics")[0] == 401

    # A token limited to writing cpu.
    secret = token(secured, "cpu_ingest", "writer", "INSERT ON cpu")
    bearer = ["-H", f"Authorization: Bearer {secret}"]
    assert curl(*bearer, "-X", "POST", "--data-binary", "cpu,host=t usage=2", url)[0] == 204
    with admin(secured) as c:
        # Stored hashed: the secret is nowhere in the catalog.
        catalog = (secured.data_dir / "catalog.sqlite").read_bytes()
        assert secret.encode() not in catalog
        rows = c.execute("SELECT token_name, user_name, insert_only_table, expired FROM system.tokens").fetchall()
        assert rows == [("cpu_ingest", "writer", "cpu", False)]
        c.execute("DROP TOKEN cpu_ingest")
    code, body = curl(*bearer, "-X", "POST", "--data-binary", "cpu,host=t usage=3", url)
    # As docs/security.md quotes it.
    assert code == 401 and json.loads(body) == {"error": "invalid token: it is unknown, expired or revoked"}, body

    # A token that expires.
    secret = token(secured, "brief", "ingester", "EXPIRES IN '2 seconds'")
    bearer = ["-H", f"Authorization: Bearer {secret}"]
    assert curl(*bearer, "-X", "POST", "--data-binary", "disk,host=t free=1", url)[0] == 204
    time.sleep(2.5)
    code, body = curl(*bearer, "-X", "POST", "--data-binary", "disk,host=t free=2", url)
    assert code == 401 and json.loads(body) == {"error": "invalid token: it is unknown, expired or revoked"}, body
    with admin(secured) as c:
        assert c.execute("SELECT expired FROM system.tokens WHERE token_name = 'brief'").fetchone() == (True,)
        assert c.execute("SELECT count(*) FROM disk").fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM cpu").fetchone() == (3,)
    # A dropped user's password stops working too.
    with admin(secured) as c:
        c.execute("DROP USER writer")
    code, _ = curl("-u", f"writer:{WRITER_PW}", "-X", "POST", "--data-binary", "cpu,host=h usage=1", url)
    assert code == 401


# ---------------------------------------------------------------------------
# OpenTelemetry SDK


def test_http_logins_wait_after_ten_failures(secured):
    """docs/security.md: after 10 failed logins within a minute an address
    is refused, over HTTP with 429 and Retry-After; a 401 says how to log
    in (WWW-Authenticate)."""
    url = secured.http_url + "/api/v2/write"
    out = subprocess.run(["curl", "-s", "-i", "-X", "POST", "--data-binary", "cpu,host=h usage=1", url],
                         capture_output=True, text=True, timeout=30).stdout
    assert out.startswith("HTTP/1.1 401") and "www-authenticate: " in out.lower(), out
    for _ in range(10):
        code, _ = curl("-u", "writer:wrong", "-X", "POST", "--data-binary", "cpu,host=h usage=1", url)
        assert code == 401
    out = subprocess.run(["curl", "-s", "-i", "-u", f"writer:{WRITER_PW}", "-X", "POST", "--data-binary",
                          "cpu,host=h usage=1", url], capture_output=True, text=True, timeout=30).stdout
    # (text mode reads the CRLFs as newlines)
    head, _, body = out.partition("\n\n")
    assert head.startswith("HTTP/1.1 429"), out
    retry = [line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("retry-after:")]
    assert retry and 0 < int(retry[0]) <= 60, head
    assert "too many failed logins from this address: try again in" in json.loads(body)["error"], body



@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_otel_sdk_exports_with_an_authorization_header(secured, transport):
    secret = token(secured, f"otel_{transport}", "ingester")

    def exporter(header):
        if transport == "grpc":
            headers = (("authorization", header),) if header else None
            return grpc_traces.OTLPSpanExporter(
                endpoint=secured.grpc_endpoint, insecure=True, timeout=10, headers=headers
            )
        headers = {"Authorization": header} if header else None
        return http_traces.OTLPSpanExporter(
            endpoint=f"{secured.http_url}/v1/traces", timeout=10, headers=headers
        )

    service = f"auth-{uuid.uuid4().hex[:8]}"
    for header, expect in [(f"Bearer {secret}", SpanExportResult.SUCCESS), (None, SpanExportResult.FAILURE),
                           ("Bearer sxt_not-a-token", SpanExportResult.FAILURE)]:
        out = RecordingSpanExporter(exporter(header))
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(out))
        with provider.get_tracer("t").start_as_current_span("checkout"):
            pass
        provider.shutdown()
        assert [r for _, r in out.results] == [expect], (header, out.results)
    with admin(secured) as c:
        n = c.execute("SELECT count(*) FROM otel_traces WHERE service_name = %s", (service,)).fetchone()
        assert n == (1,)
    # A read-only user's password is refused for export.
    reader = base64.b64encode(f"reader:{READER_PW}".encode()).decode()
    out = RecordingSpanExporter(exporter(f"Basic {reader}"))
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(out))
    with provider.get_tracer("t").start_as_current_span("denied"):
        pass
    provider.shutdown()
    assert [r for _, r in out.results] == [SpanExportResult.FAILURE]


# ---------------------------------------------------------------------------
# Flight SQL


def test_adbc_with_a_token_and_with_a_password(secured):
    uri = f"grpc://{secured.addrs['flight']}"
    secret = token(secured, "adbc", "reader")
    header = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {secret}"}
    with flight_sql.connect(uri, db_kwargs=header, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT host FROM cpu")
        assert cur.fetchall() == [("a",)]
        cur.execute("SELECT user_name FROM system.queries ORDER BY query_id LIMIT 1")
        assert cur.fetchall() == [("reader",)]

    bad = {adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer sxt_wrong"}
    with pytest.raises(adbc_driver_manager.Error) as e:
        with flight_sql.connect(uri, db_kwargs=bad, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "UNAUTHENTICATED" in str(e.value).upper() or "invalid token" in str(e.value), str(e.value)
    with pytest.raises(adbc_driver_manager.Error) as e:
        with flight_sql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "authentication required" in str(e.value), str(e.value)

    with admin(secured) as c:
        c.execute("DROP TOKEN adbc")
    with pytest.raises(adbc_driver_manager.Error) as e:
        with flight_sql.connect(uri, db_kwargs=header, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "invalid token" in str(e.value), str(e.value)

    # A user's name and password: the handshake checks them.
    with flight_sql.connect(uri, db_kwargs={"username": "root", "password": ROOT_PW}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM system.users")
            assert cur.fetchall() == [(4,)]
    with pytest.raises(adbc_driver_manager.Error):
        with flight_sql.connect(uri, db_kwargs={"username": "root", "password": "x"}, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")


def test_catalogs_list_only_the_tables_a_user_may_read(secured):
    """psql's \\dt and \\d, information_schema and Flight SQL GetTables
    (ADBC get_objects) show a user only the tables it may read."""
    with admin(secured) as c:
        c.execute("CREATE TABLE mem (time TIMESTAMP NOT NULL, host TEXT, used BIGINT)")
        c.execute("GRANT SELECT ON mem TO writer")

    def listed(user, password):
        out = psql(secured, user, password, r"\dt")
        assert out.returncode == 0, out.stderr
        return sorted(line.split("|")[1] for line in out.stdout.split())

    assert listed("root", ROOT_PW) == ["cpu", "mem"]
    assert listed("reader", READER_PW) == ["cpu", "mem"]
    # The writer may write cpu but read only mem.
    assert listed("writer", WRITER_PW) == ["mem"]
    hidden = psql(secured, "writer", WRITER_PW, r"\d cpu")
    assert 'Did not find any relation named "cpu"' in hidden.stderr, hidden
    shown = psql(secured, "writer", WRITER_PW, r"\d mem")
    assert shown.returncode == 0 and "used" in shown.stdout, shown
    with psycopg.connect(dsn(secured, "writer", WRITER_PW)) as c:
        names = c.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'public' GROUP BY 1"
        ).fetchall()
    assert names == [("mem",)], names

    uri = f"grpc://{secured.addrs['flight']}"

    def flight_tables(user, password):
        with flight_sql.connect(uri, db_kwargs={"username": user, "password": password},
                                autocommit=True) as conn:
            objects = conn.adbc_get_objects(depth="tables", db_schema_filter="public").read_all()
        return sorted(
            t["table_name"]
            for catalog in objects.to_pylist()
            for schema in catalog["catalog_db_schemas"] or []
            for t in schema["db_schema_tables"] or []
        )

    assert flight_tables("root", ROOT_PW) == ["cpu", "mem"]
    assert flight_tables("writer", WRITER_PW) == ["mem"]

    # DESCRIBE shows columns as a SELECT would: over Flight SQL as on pgwire.
    with flight_sql.connect(uri, db_kwargs={"username": "writer", "password": WRITER_PW},
                            autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("DESCRIBE cpu")
        assert 'permission denied for table "cpu"' in str(e.value), str(e.value)
        cur.execute("DESCRIBE mem")
        assert [r[0] for r in cur.fetchall()] == ["time", "host", "used"]
    with psycopg.connect(dsn(secured, "writer", WRITER_PW)) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("DESCRIBE cpu")

    # The privilege functions and regclass answer from the grants, with
    # parameters bound on the server too.
    with psycopg.connect(dsn(secured, "writer", WRITER_PW), autocommit=True) as c:
        ask = "SELECT has_table_privilege(%s, %s)"
        assert c.execute(ask, ["cpu", "INSERT"]).fetchone() == (True,)
        assert c.execute(ask, ["cpu", "SELECT"]).fetchone() == (False,)
        assert c.execute(ask, ["mem", "SELECT"]).fetchone() == (True,)
        with pytest.raises(psycopg.errors.UndefinedTable, match='relation "cpu" does not exist'):
            c.execute("SELECT %s::regclass", ["cpu"])
        same = "SELECT %s::regclass::oid = (SELECT oid FROM pg_class WHERE relname = 'mem')"
        assert c.execute(same, ["mem"]).fetchone() == (True,)


def test_metrics_are_for_users_who_may_read_every_table(secured):
    """/metrics names every table: a Prometheus scrape user needs SELECT on
    the database (a reader's password or token); anyone else gets 403 with
    a JSON body that says what to grant, and the server goes on."""
    code, body = curl("-u", f"reader:{READER_PW}", f"{secured.http_url}/metrics")
    assert code == 200 and "sextant_" in body, (code, body[:200])
    code, body = curl("-u", f"writer:{WRITER_PW}", f"{secured.http_url}/metrics")
    assert code == 403, (code, body)
    assert json.loads(body) == {"error": (
        'permission denied for /metrics: user "writer" needs SELECT on the database '
        "(GRANT SELECT ON DATABASE sextant TO writer), as the figures name every table"
    )}, body
    secret = token(secured, "scrape", "reader")
    code, body = curl("-H", f"Authorization: Bearer {secret}", f"{secured.http_url}/metrics")
    assert code == 200, (code, body[:200])
