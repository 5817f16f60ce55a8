"""Prometheus remote write 1.0 bodies, encoded by hand for the Python tests.

A tiny protobuf encoder for `prometheus.WriteRequest` and snappy's block
format (what /api/v1/write expects: `Content-Encoding: snappy`). Field
numbers are those of the prost messages in ingest/src/prometheus.rs:

    WriteRequest  timeseries = 1, metadata = 3
    TimeSeries    labels = 1, samples = 2
    MetricMetadata type = 1 (enum), metric_family_name = 2, help = 4, unit = 5
    Label         name = 1, value = 2
    Sample        value = 1 (double), timestamp = 2 (int64, ms)

`snappy` writes literals only (valid snappy, just not compressed);
`snappy_bomb` uses copies, to expand a small body into a large one.

Imported as a sibling module (`from remote_write import ...`): pytest puts
tests/python on sys.path, as for `from conftest import Server`.
"""

import struct

STALE_NAN = 0x7FF0000000000002  # Prometheus' staleness marker (bits of a NaN)


def varint(n: int) -> bytes:
    """A base-128 varint; negative numbers as their 64-bit two's complement."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def pb_label(name: str, value: str) -> bytes:
    """prometheus.Label: name = 1, value = 2."""
    return field_bytes(1, name.encode()) + field_bytes(2, value.encode())


def pb_sample(value, ts_ms: int) -> bytes:
    """prometheus.Sample: value = 1 (double), timestamp = 2 (int64, ms).

    `value` is a float, or `("bits", n)` for the exact 64 bits of a double
    (e.g. `("bits", STALE_NAN)`)."""
    bits = value[1].to_bytes(8, "little") if isinstance(value, tuple) else struct.pack("<d", value)
    return varint(1 << 3 | 1) + bits + varint(2 << 3 | 0) + varint(ts_ms)


def pb_series(labels, samples) -> bytes:
    """prometheus.TimeSeries: labels = 1, samples = 2.

    `labels`: (name, value) pairs, encoded in the order given;
    `samples`: (value, ts_ms) pairs, `value` as for `pb_sample`."""
    return b"".join(field_bytes(1, pb_label(n, v)) for n, v in labels) + b"".join(
        field_bytes(2, pb_sample(v, t)) for v, t in samples
    )


METRIC_TYPES = ["unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset"]


def pb_metadata(kind: str, family: str, help_text: str, unit: str = "") -> bytes:
    """prometheus.MetricMetadata, as a WriteRequest field (metadata = 3):
    `kind` is the type's name as Prometheus's API writes it ("counter")."""
    body = (
        varint(1 << 3 | 0) + varint(METRIC_TYPES.index(kind))
        + field_bytes(2, family.encode()) + field_bytes(4, help_text.encode()) + field_bytes(5, unit.encode())
    )
    return field_bytes(3, body)


def write_request(*series) -> bytes:
    """prometheus.WriteRequest: timeseries = 1 (each one from `pb_series`)."""
    return b"".join(field_bytes(1, s) for s in series)


def snappy(data: bytes) -> bytes:
    """Snappy block format with literals only: the uncompressed length as a
    varint, then literal elements of at most 64 KiB (valid snappy, just not
    compressed)."""
    out = bytearray(varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")
        out += chunk
    return bytes(out)


def snappy_bomb(copies: int) -> bytes:
    """A real snappy block of 1 + 64 * copies bytes: one literal byte, then
    copies of 64 bytes at offset 1 (3 bytes each)."""
    total = 1 + 64 * copies
    return varint(total) + bytes([0 << 2, ord("a")]) + bytes([(63 << 2) | 2, 1, 0]) * copies
