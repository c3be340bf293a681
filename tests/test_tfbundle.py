"""Our reader of TensorFlow's tensor bundles, on a bundle TensorFlow 2.12.1 wrote
(tests/data/tf_bundle, made by tests/make_tf_bundle.py in spleeter's environment), and on
corrupt and truncated copies of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stemsplit.errors import ModelError
from stemsplit.tfbundle import CRC_LIST, TensorBundle, crc32c, read_bundle

FIXTURE = Path(__file__).with_name("data") / "tf_bundle"
DATA = "model.data-00000-of-00001"


def test_reads_every_tensor_as_tensorflow_wrote_it():
    expected = dict(np.load(FIXTURE / "values.npz"))
    read = read_bundle(FIXTURE / "model")
    assert sorted(read) == sorted(expected)
    for name, value in expected.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        assert np.array_equal(read[name], value), name


def byte_by_byte(data: bytes) -> int:
    state = 0xFFFFFFFF
    for byte in data:
        state = CRC_LIST[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state ^ 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 3, 1023, 1024, 4099, 70_001, (1 << 20) + 5])
def test_crc32c_in_lanes_is_the_byte_by_byte_crc(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc32c(data) == byte_by_byte(data)
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


@pytest.fixture
def copy(tmp_path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "bundle")
    return tmp_path / "bundle"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def one_line_error(prefix: Path, name: str | None = None) -> str:
    with pytest.raises(ModelError) as caught:
        bundle = TensorBundle(prefix)
        if name is not None:
            bundle.read(name)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_corrupt_tensor_fails_its_crc_naming_the_file(copy):
    entry = TensorBundle(copy / "model").entries["conv2d/kernel"]
    flip(copy / DATA, entry.offset + 7)
    message = one_line_error(copy / "model", "conv2d/kernel")
    assert DATA in message and "CRC-32C" in message and "conv2d/kernel" in message
    assert np.array_equal(TensorBundle(copy / "model").read("counts"), np.arange(-3, 9).reshape(3, 4))


def test_a_corrupt_index_fails_its_block_crc(copy):
    flip(copy / "model.index", 40)
    message = one_line_error(copy / "model")
    assert "model.index" in message and "CRC-32C" in message


@pytest.mark.parametrize("kept", [0, 20, 100, -1])
def test_a_truncated_index_is_refused(copy, kept):
    index = copy / "model.index"
    index.write_bytes(index.read_bytes()[:kept])
    assert "model.index" in one_line_error(copy / "model")


def test_a_truncated_shard_is_refused_before_reading(copy):
    shard = copy / DATA
    shard.write_bytes(shard.read_bytes()[:100])
    message = one_line_error(copy / "model")
    assert "model.index" in message and "past the end of its shard" in message


def test_a_missing_shard_or_tensor_is_named(copy):
    assert "'absent'" in one_line_error(copy / "model", "absent")
    (copy / DATA).unlink()
    assert DATA in one_line_error(copy / "model")
