"""Line protocol from the official InfluxDB v2 Python client
(`influxdb-client`): its synchronous write API posts to
/api/v2/write?org=&bucket=&precision=, and the points come back over pgwire
as a table per measurement, tags as text columns and fields typed."""

import datetime as dt

import psycopg
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS


def test_influxdb_client_writes_points(server):
    t0 = dt.datetime(2026, 11, 22, 8, 0, 0, tzinfo=dt.timezone.utc)
    t0_ns = int(t0.timestamp()) * 1_000_000_000
    with InfluxDBClient(url=server.http_url, token="ignored", org="acme") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        points = [
            Point("cpu")
            .tag("host", f"web-{i % 3}")
            .tag("region", "eu")
            .field("usage", 10.5 + i)
            .field("cores", 4 + i)
            .field("healthy", i % 2 == 0)
            .field("note", f"sample {i}")
            .time(t0_ns + i * 123_456_789, WritePrecision.NS)
            for i in range(6)
        ]
        write.write(bucket="telemetry", record=points)
        # A second measurement in the same batch, as line-protocol text.
        write.write(
            bucket="telemetry",
            record="mem,host=web-0 used=1024i,ratio=0.25 " + str(t0_ns),
            write_precision=WritePrecision.NS,
        )

        # A field whose type conflicts with the existing column is refused
        # with 400, naming the column and both types; the client raises.
        with pytest.raises(InfluxDBError) as err:
            write.write(bucket="telemetry", record='cpu,host=web-9 usage="high" ' + str(t0_ns))
        assert err.value.response.status == 400
        message = str(err.value)
        assert "usage" in message and "double" in message and "text" in message, message

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT time, host, region, usage, cores, healthy, note FROM cpu ORDER BY time"
        ).fetchall()
        assert len(rows) == 6, rows
        for i, (t, host, region, usage, cores, healthy, note) in enumerate(rows):
            want = t0 + dt.timedelta(microseconds=(i * 123_456_789) // 1000)
            assert t == want, (t, want)
            assert (host, region) == (f"web-{i % 3}", "eu")
            assert usage == 10.5 + i
            assert cores == 4 + i
            assert healthy is (i % 2 == 0)
            assert note == f"sample {i}"
        # Exact nanoseconds survive (pgwire text stops at microseconds).
        ns = conn.execute(
            "SELECT CAST(extract(nanosecond FROM time) AS BIGINT) % 1000 FROM cpu ORDER BY time"
        ).fetchall()
        assert [r[0] for r in ns] == [(i * 123_456_789) % 1000 for i in range(6)]
        assert conn.execute("SELECT used, ratio FROM mem").fetchall() == [(1024, 0.25)]
