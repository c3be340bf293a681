"""Issue 22: a demucs package's constructor arguments (legacy `.th` and safetensors, in a `--repo` folder) are
bounded before its network is built, in every package family: one error naming the file and the key, the
model exit code, no traceback, no allocation sized from the hostile value."""

from __future__ import annotations

import importlib
import io
import json
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import soundfile as sf
import torch

from oracle import encode_fraction
from reference_configs import SMALL_KWARGS
from stemsplit import load_model
from stemsplit.errors import ModelError
from stemsplit.families import package_classes
from test_demucs_v2 import SMALL_DEMUCS, SMALL_TASNET
from test_demucs_v2_cli import stand_in
from v3_configs import SMALL_DEMUCS as SMALL_V3_DEMUCS
from v3_configs import SMALL_HDEMUCS

HTDEMUCS, HDEMUCS, DEMUCS = "demucs.htdemucs.HTDemucs", "demucs.hdemucs.HDemucs", "demucs.demucs.Demucs"
V2_DEMUCS, TASNET = "demucs.model.Demucs", "demucs.tasnet.ConvTasNet"
SMALL = {HTDEMUCS: SMALL_KWARGS, HDEMUCS: SMALL_HDEMUCS, DEMUCS: SMALL_V3_DEMUCS, V2_DEMUCS: SMALL_DEMUCS,
         TASNET: SMALL_TASNET}
NAMES = [f"stem{index}" for index in range(10**5)]
CASES = [
    (HTDEMUCS, {"channels": 10**6}, "channels is 1000000, more than the 192"),
    (HTDEMUCS, {"depth": 10**4}, "depth is 10000, more than the 8"),
    (HTDEMUCS, {"segment": 10**9}, "segment is 1000000000, more than the 32"),
    (HTDEMUCS, {"sources": NAMES}, "sources must be 1 to 32 distinct names"),
    (HTDEMUCS, {"nfft": 2**30}, "nfft is 1073741824, more than the 16384"),
    (HTDEMUCS, {"t_layers": 10**4}, "t_layers is 10000, more than the 20"),
    (HTDEMUCS, {"samplerate": 10**12}, "samplerate is 1000000000000, more than the 192000"),
    (HTDEMUCS, {"dconv_comp": 1e-9}, "dconv_comp must be a number of at least 1"),
    (HTDEMUCS, {"channels": 192, "bottom_channels": 2048, "t_hidden_scale": 16},
     "it would hold [0-9,]+ weights, more than the 84,000,000"),
    (HDEMUCS, {"channels": 10**6}, "channels is 1000000, more than the 192"),
    (HDEMUCS, {"multi_freqs": [0.5] * 10**5}, "multi_freqs holds 100000 values, more than the 8"),
    (HDEMUCS, {"wiener_iters": 10**9}, "wiener_iters is 1000000000, more than the 16"),
    (HDEMUCS, {"segment": float("inf")}, "segment is inf, more than the 176"),
    (DEMUCS, {"depth": 10**4}, "depth is 10000, more than the 8"),
    (DEMUCS, {"lstm_layers": 10**6}, "lstm_layers is 1000000, more than the 8"),
    (DEMUCS, {"depth": 7, "stride": 8}, r"stride \*\* depth is 2097152, more than the 16384"),
    (DEMUCS, {"norm_groups": 3}, "its sizes do not make a network"),
    (V2_DEMUCS, {"depth": 10**9}, "depth is 1000000000, more than the 8"),
    (V2_DEMUCS, {"segment_length": 10**12}, "segment_length is 1000000000000, more than the 30720000"),
    (TASNET, {"X": 10**3}, "X is 1000, more than the 16"),
    (TASNET, {"N": 10**6}, "N is 1000000, more than the 1024"),
]


def legacy_package(klass: str, kwargs: dict) -> bytes:
    """A legacy package naming `klass`, holding no weights: its arguments must be refused before any are read."""
    buffer = io.BytesIO()
    torch.save({"klass": pickled_as(klass), "args": [], "kwargs": kwargs, "state": {},
                "training_args": {}}, buffer)
    return buffer.getvalue()


def pickled_as(klass: str) -> type:
    """The class itself where the installed demucs 4.1 has it (a stand-in would replace it), else a stand-in."""
    module, _, name = klass.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return stand_in(module, name)


def safetensors_package(klass: str, kwargs: dict) -> bytes:
    metadata = {"klass": klass, "args": "[]", "kwargs": json.dumps(kwargs, default=encode_fraction)}
    return safetensors.torch.save({"unused": torch.zeros(1)}, metadata)


def repo_with(tmp_path: Path, klass: str, changes: dict, format: str = "th") -> Path:
    write = legacy_package if format == "th" else safetensors_package
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f"hostile.{format}").write_bytes(write(klass, {**SMALL[klass], **changes}))
    return tmp_path


def test_every_package_family_is_covered():
    assert set(SMALL) == set(package_classes())


@pytest.mark.parametrize("klass, changes, words", CASES, ids=[f"{k.split('.')[-1]}-{'-'.join(c)}" for k, c, _ in CASES])
def test_api_refuses_hostile_arguments_naming_file_and_key(tmp_path, klass, changes, words):
    repo = repo_with(tmp_path, klass, changes)
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    with pytest.raises(ModelError, match=f"^{tmp_path / 'hostile.th'} has a model configuration stemsplit does "
                                         f"not support: {words}"):
        load_model("hostile", repo=repo, device="cpu")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 300_000 and time.monotonic() - start < 30, (grown_kib, time.monotonic() - start)


@pytest.mark.parametrize("klass, changes, words", [
    (HTDEMUCS, {"t_layers": 10**4}, "t_layers is 10000"),
    (HDEMUCS, {"nfft": 2**30}, "nfft is 1073741824"),
    (DEMUCS, {"channels": 10**6}, "channels is 1000000"),
])
def test_safetensors_arguments_are_bounded_too(tmp_path, klass, changes, words):
    repo = repo_with(tmp_path, klass, changes, format="safetensors")
    with pytest.raises(ModelError, match=f"hostile.safetensors has a model configuration .*: {words}, more than"):
        load_model("hostile", repo=repo, device="cpu")


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, (4410, 2)), 44100)
    return path


@pytest.mark.parametrize("klass, changes, words", [
    (HTDEMUCS, {"segment": 10**9}, "segment is 1000000000"),
    (HDEMUCS, {"depth": 10**4}, "depth is 10000"),
    (DEMUCS, {"sources": NAMES}, "sources must be 1 to 32 distinct names"),
    (V2_DEMUCS, {"channels": 10**6}, "channels is 1000000"),
    (TASNET, {"samplerate": 10**12}, "samplerate is 1000000000000"),
])
def test_the_command_gives_one_error_line_and_the_model_exit_code(tmp_path, in_process, song, klass, changes, words):
    repo = repo_with(tmp_path / "repo", klass, changes)
    result = in_process("--repo", repo, "-n", "hostile", song, "-o", tmp_path / "out", tmp=tmp_path / "tmp")
    assert result.returncode == ModelError.exit_code, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: {repo / 'hostile.th'} has a model configuration") and words in line, line
    assert not (tmp_path / "out").exists()


def test_a_bag_files_segment_is_bounded(tmp_path, tiny_repo):
    for path in tiny_repo.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "long.yaml").write_text("models: ['0tiny000']\nsegment: 1000000000\n")
    with pytest.raises(ModelError, match=r"long\.yaml: `segment:` is 1000000000 seconds, more than the 176"):
        load_model("long", repo=tmp_path, device="cpu")
