"""Writes TensorFlow tensor bundles without TensorFlow, for tests that need a whole Spleeter checkpoint
in CI: one data block of the string table, an empty meta-index block, an index block and the footer,
each block with its masked CRC-32C, as TensorFlow lays them out (tests/data/tf_bundle is TensorFlow's own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemsplit.tfbundle import DTYPES, TABLE_MAGIC, crc32c, masked

DTYPE_NUMBERS = {np.dtype(name): number for number, name in DTYPES.items()}


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def entry(array: np.ndarray, offset: int) -> bytes:
    shape = b"".join(field(2, field(1, size)) for size in array.shape)
    crc = masked(crc32c(array.tobytes()))
    return (field(1, DTYPE_NUMBERS[array.dtype]) + field(2, shape) + field(4, offset) + field(5, array.nbytes)
            + varint(6 << 3 | 5) + crc.to_bytes(4, "little"))


def block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(key)) + varint(len(value)) + key + value for key, value in entries)
    contents = body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart point, at 0
    return contents + b"\0" + masked(crc32c(contents + b"\0")).to_bytes(4, "little")


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    """`prefix`.index and `prefix`.data-00000-of-00001 holding `tensors` (little-endian)."""
    data, entries = bytearray(), [(b"", field(1, 1) + field(3, field(1, 1)))]  # 1 shard, little-endian
    for name in sorted(tensors, key=str.encode):
        array = np.asarray(tensors[name], order="C")
        entries.append((name.encode(), entry(array, len(data))))
        data += array.tobytes()
    blocks = block(entries)
    meta = block([])
    index = block([(entries[-1][0], varint(0) + varint(len(blocks) - 5))])
    footer = varint(len(blocks)) + varint(len(meta) - 5) + varint(len(blocks) + len(meta)) + varint(len(index) - 5)
    footer = footer.ljust(40, b"\0") + TABLE_MAGIC.to_bytes(8, "little")
    Path(f"{prefix}.index").write_bytes(blocks + meta + index + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
