"""TensorFlow's tensor bundles (the checkpoints `tf.compat.v1.train.Saver` writes), read with numpy alone.

A bundle `PREFIX` is `PREFIX.index`, a sorted string table in LevelDB's format (data blocks of
prefix-compressed keys, an index block pointing at them, a 48-byte footer ending in the table's
magic number; each block followed by its compression type and masked CRC-32C), and the shards
`PREFIX.data-0000i-of-0000n` holding the tensors' raw bytes. The table maps the empty key to a
BundleHeaderProto (shard count, endianness) and each tensor's name to a BundleEntryProto (dtype,
shape, shard, offset, size, masked CRC-32C of the bytes). Every size, count and offset is checked
against the files' lengths before anything is allocated, every CRC is checked, and anything
corrupt, truncated or not understood is a ModelError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import ModelError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_BYTES = 5  # compression type, masked CRC-32C
MAX_INDEX_BYTES = 64 << 20
MAX_DIMS = 32
# TensorFlow's DataType numbers -> numpy's; DT_STRING (7), DT_BFLOAT16 (14) and the quantised
# and resource types have no plain numpy array and are refused when read.
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 8: "complex64",
          9: "int64", 10: "bool", 17: "uint16", 18: "complex128", 19: "float16", 22: "uint32", 23: "uint64"}
BIG_ENDIAN = 1  # BundleHeaderProto.Endianness


class CorruptBundle(ModelError):
    """A bundle file that is truncated, corrupt or not in the format this reader knows."""


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor's bytes are and what they hold."""

    dtype: int  # TensorFlow's DataType number
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


# CRC-32C (Castagnoli, reflected), with TensorFlow's and LevelDB's masking of stored values.

def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


CRC_TABLE = _byte_table()
CRC_LIST = CRC_TABLE.tolist()
# WORD_TABLES[k][b]: byte b followed by k zero bytes, so that a 4-byte word is taken in one step.
WORD_TABLES = [CRC_TABLE]
for _ in range(3):
    WORD_TABLES.append(WORD_TABLES[-1] >> 8 ^ CRC_TABLE[WORD_TABLES[-1] & 0xFF])
MAX_LANES = 1 << 14  # runs of bytes whose CRCs are taken side by side, then joined
MIN_LANE = 64
SMALL = 1024  # bytes whose CRC a plain loop takes as fast


@lru_cache(maxsize=32)
def _zero_shift(count: int) -> tuple[list[int], ...]:
    """The (linear) effect on a CRC state of `count` zero bytes, as 4 tables of 256 for its bytes."""
    columns = _power([CRC_LIST[1 << bit] if bit < 8 else 1 << (bit - 8) for bit in range(32)], count)
    return tuple([_apply(columns, value << (8 * part)) for value in range(256)] for part in range(4))


def _apply(columns: list[int], state: int) -> int:
    result = 0
    for bit, column in enumerate(columns):
        if state >> bit & 1:
            result ^= column
    return result


def _power(columns: list[int], count: int) -> list[int]:
    result = [1 << bit for bit in range(32)]
    while count:
        if count & 1:
            result = [_apply(columns, column) for column in result]
        columns = [_apply(columns, column) for column in columns]
        count >>= 1
    return result


def _lane_states(lanes: np.ndarray) -> np.ndarray:
    """Each row's CRC state from zero, four bytes (a little-endian word) at a time."""
    states, part, result = (np.zeros(len(lanes), dtype=np.uint32) for _ in range(3))
    for word in np.ascontiguousarray(lanes.view("<u4").T):
        states ^= word
        np.take(WORD_TABLES[3], states & 0xFF, out=result)
        for shift, table in ((8, WORD_TABLES[2]), (16, WORD_TABLES[1]), (24, WORD_TABLES[0])):
            np.right_shift(states, shift, out=part)
            part &= 0xFF
            result ^= np.take(table, part)
        states, result = result, states
    return states


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of `data`. Large inputs are cut into lanes of equal length whose CRCs from a zero
    state run side by side in numpy (zeros put before the first lane change nothing), then are
    joined in order; the all-ones initial state is the first 4 bytes inverted."""
    size = len(data)
    if size < SMALL:
        state = 0xFFFFFFFF
        for byte in bytes(data):
            state = CRC_LIST[(state ^ byte) & 0xFF] ^ (state >> 8)
        return state ^ 0xFFFFFFFF
    length = max(MIN_LANE, 1 << (-(-size // MAX_LANES) - 1).bit_length())
    lanes = -(-size // length)
    padded = np.zeros(lanes * length, dtype=np.uint8)
    padded[len(padded) - size:] = np.frombuffer(data, dtype=np.uint8)
    padded[len(padded) - size:len(padded) - size + 4] ^= 0xFF
    states = _lane_states(padded.reshape(lanes, length))
    shift, joined = _zero_shift(length), 0
    for state in states.tolist():
        joined = (shift[0][joined & 255] ^ shift[1][(joined >> 8) & 255] ^ shift[2][(joined >> 16) & 255]
                  ^ shift[3][joined >> 24] ^ state)
    return joined ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# Protocol buffers and varints, bounded by the buffer they are read from.

class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.position, self.path = data, 0, path

    def fail(self, what: str) -> CorruptBundle:
        return CorruptBundle(f"{self.path} is not a readable TensorFlow checkpoint: {what}")

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            if self.position >= len(self.data):
                raise self.fail("a number runs past its end")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise self.fail("a number is longer than 10 bytes")

    def take(self, count: int) -> bytes:
        if count > len(self.data) - self.position:
            raise self.fail("a record runs past its end")
        self.position += count
        return self.data[self.position - count:self.position]

    @property
    def done(self) -> bool:
        return self.position >= len(self.data)


def _fields(data: bytes, path: Path) -> list[tuple[int, int | bytes]]:
    """A message's (field number, value): an int for varints and fixed numbers, bytes for the rest."""
    cursor, fields = _Cursor(data, path), []
    while not cursor.done:
        key = cursor.varint()
        wire = key & 7
        if wire == 0:
            value = cursor.varint()
        elif wire in (1, 5):
            value = int.from_bytes(cursor.take(8 if wire == 1 else 4), "little")
        elif wire == 2:
            value = cursor.take(cursor.varint())
        else:
            raise cursor.fail(f"a field of wire type {wire}")
        fields.append((key >> 3, value))
    return fields


# The string table

@dataclass(frozen=True)
class _Handle:
    offset: int
    size: int


def _handle(cursor: _Cursor) -> _Handle:
    return _Handle(cursor.varint(), cursor.varint())


def table_entries(path: Path) -> list[tuple[bytes, bytes]]:
    """Every key and value of a LevelDB-format table file, in order, each block's CRC checked."""
    data = _read_index(path)
    footer = _Cursor(data[-FOOTER_BYTES:], path)
    if int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise footer.fail("it does not end in the string table's magic number (truncated?)")
    _handle(footer)  # the meta-index block: TensorFlow writes no filter or statistics
    entries = []
    for _, value in _block_entries(_block(data, _handle(footer), path), path):
        entries.extend(_block_entries(_block(data, _handle(_Cursor(value, path)), path), path))
    keys = [key for key, _ in entries]
    if any(earlier >= later for earlier, later in zip(keys, keys[1:])):
        raise footer.fail("its keys are not in order")
    return entries


def _read_index(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if not FOOTER_BYTES <= size <= MAX_INDEX_BYTES:
            raise CorruptBundle(f"{path} is not a readable TensorFlow checkpoint: {size} bytes is not the size "
                                f"of a checkpoint index ({FOOTER_BYTES} to {MAX_INDEX_BYTES})")
        return path.read_bytes()
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror or error}") from None


def _block(data: bytes, handle: _Handle, path: Path) -> bytes:
    end = handle.offset + handle.size
    if end + BLOCK_TRAILER_BYTES > len(data) - FOOTER_BYTES:
        raise _Cursor(data, path).fail("a block lies past the end of the file (truncated?)")
    contents, kind = data[handle.offset:end], data[end]
    if masked(crc32c(data[handle.offset:end + 1])) != int.from_bytes(data[end + 1:end + 5], "little"):
        raise _Cursor(data, path).fail(f"the block at byte {handle.offset} fails its CRC-32C (corrupt)")
    if kind != 0:
        raise _Cursor(data, path).fail(f"a block is compressed (type {kind}), which TensorFlow bundles never are")
    return contents


def _block_entries(block: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    """A block's keys (each sharing a prefix with the one before) and values, before its restart points."""
    cursor = _Cursor(block, path)
    if len(block) < 4:
        raise cursor.fail("a block is too short")
    restarts = int.from_bytes(block[-4:], "little")
    if 4 * restarts + 4 > len(block):
        raise cursor.fail("a block's restart points run past its start")
    cursor.data = block[:len(block) - 4 - 4 * restarts]
    entries, key = [], b""
    while not cursor.done:
        shared, own, value_size = cursor.varint(), cursor.varint(), cursor.varint()
        if shared > len(key):
            raise cursor.fail("a key shares more than the key before it holds")
        key = key[:shared] + cursor.take(own)
        entries.append((key, cursor.take(value_size)))
    return entries


# The bundle

class TensorBundle:
    """A checkpoint's tensors by name: `PREFIX.index` read whole, each shard's bytes read per tensor."""

    def __init__(self, prefix: Path):
        self.index = Path(f"{prefix}.index")
        entries = dict(table_entries(self.index))
        shards, self.big_endian = self._header(entries.pop(b"", None))
        self.shards = [Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}") for shard in range(shards)]
        lengths = [self._length(shard) for shard in self.shards]
        self.entries = {self._name(key): self._entry(value, lengths) for key, value in entries.items()}

    def fail(self, what: str) -> CorruptBundle:
        return CorruptBundle(f"{self.index} is not a readable TensorFlow checkpoint: {what}")

    def _header(self, value: bytes | None) -> tuple[int, bool]:
        if value is None:
            raise self.fail("it has no bundle header")
        fields = dict(_fields(value, self.index))
        shards = fields.get(1, 0)
        if not isinstance(shards, int) or not 1 <= shards <= 1 << 16:
            raise self.fail(f"its header gives {shards!r} data shards")
        return shards, fields.get(2, 0) == BIG_ENDIAN

    def _length(self, shard: Path) -> int:
        try:
            return shard.stat().st_size
        except OSError as error:
            raise ModelError(f"{shard} (a shard of the checkpoint {self.index}) cannot be read: "
                             f"{error.strerror or error}") from None

    def _name(self, key: bytes) -> str:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a tensor's name is not UTF-8") from None

    def _entry(self, value: bytes, lengths: list[int]) -> BundleEntry:
        fields = _fields(value, self.index)
        numbers = {number: field for number, field in fields if isinstance(field, int)}
        if any(number == 7 for number, _ in fields):
            raise self.fail("it holds a sliced (partitioned) variable")
        shape = next((field for number, field in fields if number == 2), b"")
        entry = BundleEntry(numbers.get(1, 0), self._shape(shape), numbers.get(3, 0), numbers.get(4, 0),
                            numbers.get(5, 0), numbers.get(6, 0))
        if entry.shard >= len(lengths) or entry.offset + entry.size > lengths[entry.shard]:
            raise self.fail(f"a tensor's {entry.size} bytes at {entry.offset} lie past the end of its shard "
                            "(truncated?)")
        dtype = DTYPES.get(entry.dtype)
        if dtype is not None and entry.size != entry.count * np.dtype(dtype).itemsize:
            raise self.fail(f"a tensor of shape {entry.shape} has {entry.size} bytes")
        return entry

    def _shape(self, shape: bytes) -> tuple[int, ...]:
        fields = _fields(shape, self.index)
        if any(number == 3 and value for number, value in fields):
            raise self.fail("a tensor has an unknown rank")
        dims = [dict(_fields(value, self.index)).get(1, 0) for number, value in fields if number == 2]
        if len(dims) > MAX_DIMS or any(not isinstance(size, int) or size >= 1 << 62 for size in dims):
            raise self.fail("a tensor's shape is not a shape")
        return tuple(dims)

    def read(self, name: str) -> np.ndarray:
        """The tensor `name`, its bytes' CRC checked."""
        entry = self.entries.get(name)
        if entry is None:
            raise self.fail(f"it has no tensor '{name}'")
        if entry.dtype not in DTYPES:
            raise self.fail(f"'{name}' is of TensorFlow dtype {entry.dtype}, which has no numpy array")
        data = self._bytes(entry, name)
        dtype = np.dtype(DTYPES[entry.dtype]).newbyteorder(">" if self.big_endian else "<")
        return np.frombuffer(data, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))

    def _bytes(self, entry: BundleEntry, name: str) -> bytearray:
        shard = self.shards[entry.shard]
        data = bytearray(entry.size)
        try:
            with open(shard, "rb") as file:
                file.seek(entry.offset)
                read = file.readinto(data)
        except OSError as error:
            raise ModelError(f"cannot read {shard}: {error.strerror or error}") from None
        if read != entry.size:
            raise CorruptBundle(f"{shard} is truncated: '{name}' runs past its end")
        if masked(crc32c(data)) != entry.crc32c:
            raise CorruptBundle(f"{shard} is corrupt: the bytes of '{name}' fail their CRC-32C")
        return data


def read_bundle(prefix: Path) -> dict[str, np.ndarray]:
    """Every tensor of the bundle `prefix` that numpy can hold, by name."""
    bundle = TensorBundle(prefix)
    return {name: bundle.read(name) for name, entry in bundle.entries.items() if entry.dtype in DTYPES}
