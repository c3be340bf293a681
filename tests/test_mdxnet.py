"""MDX-Net: an ONNX model of UVR's real input shape, run by onnxruntime in our engine, against audio-separator's
MDXSeparator `demix` running the same file; its parameter files; the missing extra; the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from helpers import read, sdr, separate_tensor, stemsplit, tone
from mdxnet_oracle import INST_HQ_3, onnx_model, oracle_demix
from stemsplit.errors import ModelError
from stemsplit.families import for_local
from stemsplit.families.mdxnet import read_params
from stemsplit.family import LocalFiles
from stemsplit.registry import load_bag
from stemsplit.separation import Settings

pytest.importorskip("onnxruntime", reason="onnxruntime (the mdx extra) is not installed")
EXACT = ("--bit-depth", "32", "--clip-mode", "none")


def write_params(folder: Path, params: dict, name: str = "params.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(params))
    return path


@pytest.fixture(scope="module")
def inst_hq(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mdxnet")
    return onnx_model(folder, INST_HQ_3["dim_f"]), write_params(folder, INST_HQ_3)


def random_mix(seconds: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, int(seconds * 44100), generator=generator) + 0.05


@pytest.mark.parametrize("seconds, overlap, denoise", [
    (13.1, None, False),  # several chunks, the last cut short with its own window
    (2.0, 0.5, True),  # shorter than one chunk; denoise runs the model on the negated spectrogram too
    (7.3, 0.0, False),  # no window: plain averages
])
def test_engine_matches_the_oracle_demix(tmp_path, inst_hq, seconds, overlap, denoise):
    model, params_path = inst_hq
    params = {**INST_HQ_3, "denoise": denoise}
    bag = load_bag(checkpoint=model, config=write_params(tmp_path, params))
    assert bag.stems == ["instrumental", "vocals"] and bag.residual is None
    mix = random_mix(seconds, seed=1)
    expected = oracle_demix(model, mix, params, 0.25 if overlap is None else overlap)
    result = separate_tensor(bag, mix, Settings(overlap=overlap, batch_size=2))
    assert result.shape == (2, 2, mix.shape[1])
    assert sdr(result[0], expected["instrumental"]) > 90 and sdr(result[1], expected["vocals"]) > 90


def test_a_model_of_fixed_batch_size_runs_chunk_by_chunk(tmp_path):
    params = {**INST_HQ_3, "dim_f": 256, "n_fft": 2048}
    model = onnx_model(tmp_path, 256, seed=2, fixed_batch=True)
    bag = load_bag(checkpoint=model, config=write_params(tmp_path, params))
    mix = random_mix(1.0, seed=2)
    result = separate_tensor(bag, mix, Settings(batch_size=3))
    assert sdr(result[0], oracle_demix(model, mix, params)["instrumental"]) > 90


def test_onnx_files_are_mdx_net_and_yamls_of_checkpoints_are_not(tmp_path, inst_hq):
    model, params_path = inst_hq
    assert for_local(LocalFiles(model, params_path)).name == "mdx_net"
    with pytest.raises(ModelError, match="no model family recognises"):
        for_local(LocalFiles(model))


@pytest.mark.parametrize("change, message", [
    ({"dim_f": 4000}, r"dim_f \(4000\) must be above 3 and at most n_fft / 2 \+ 1"),
    ({"n_fft": 10**6}, "n_fft must be an integer from 1 to 32768"),
    ({"compensate": "high"}, "compensate must be a number above 0"),
    ({"denoise": "yes"}, "denoise must be true or false"),
    ({"primary": "../vocals"}, "primary must be a stem name"),
    ({"secondary": "instrumental"}, "primary and secondary must be different stems"),
    ({"segment": 256}, "unknown parameter segment"),
    ({"n_fft": 1024, "dim_f": 256}, r"hop_length \(1024\) must be at most n_fft / 2"),
])
def test_parameter_problems_are_model_errors_naming_the_file(tmp_path, change, message):
    path = write_params(tmp_path, {**INST_HQ_3, **change})
    with pytest.raises(ModelError, match=message) as error:
        read_params(path)
    assert str(path) in str(error.value)


def test_an_onnx_file_of_another_shape_is_refused(tmp_path, inst_hq):
    model, _ = inst_hq
    with pytest.raises(ModelError, match=r"takes inputs of shape \['batch', 4, 3072, 256\], not \(batch, 4, 2048"):
        load_bag(checkpoint=model, config=write_params(tmp_path, {**INST_HQ_3, "dim_f": 2048}))


def test_without_onnxruntime_the_error_names_the_extra(tmp_path, inst_hq, monkeypatch):
    model, params_path = inst_hq
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match=r"MDX-Net models need onnxruntime: pip install 'stemsplit\[mdx\]'"):
        load_bag(checkpoint=model, config=params_path)


def test_an_onnx_model_runs_from_the_command_like_the_oracle(tmp_path, inst_hq):
    model, params_path = inst_hq
    song = tmp_path / "song.wav"
    sf.write(song, tone(3.0, 44100), 44100, subtype="FLOAT")
    result = stemsplit("--checkpoint", model, "--config", params_path, song, "-o", tmp_path, *EXACT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / model.stem / "song"
    mix, _ = read(song)
    expected = oracle_demix(model, torch.from_numpy(mix.copy()), INST_HQ_3)
    for name in ("instrumental", "vocals"):
        stem, rate = read(folder / f"{name}.wav")
        assert rate == 44100 and stem.shape == mix.shape and sdr(stem, expected[name]) > 90
    bad = stemsplit("--checkpoint", model, "--config", params_path, "--segment", "2", song, cwd=tmp_path)
    assert bad.returncode == 2 and "segment is for HT Demucs and RoFormer models" in bad.stderr
