"""The Python API: paths, bytes and arrays in, stems as arrays out."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import stemsplit
from helpers import separate_tensor
from stemsplit import precision
from stemsplit.registry import load_bag
from stemsplit.separation import Settings, decide


@pytest.fixture(scope="module")
def model(tiny_repo):
    return stemsplit.load_model("tiny", repo=tiny_repo, device="cpu")


def noise(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal((channels, frames))).astype(np.float32)


def test_array_at_the_model_rate_gives_the_engine_output(model, tiny_repo):
    samples = noise(2, 90_000)
    stems, rate = model.separate((samples, 44100))
    expected = separate_tensor(load_bag("tiny", tiny_repo), torch.from_numpy(samples))
    assert rate == 44100 and list(stems) == model.stems
    for index, name in enumerate(model.stems):
        assert stems[name].dtype == np.float32
        np.testing.assert_allclose(stems[name], expected[index].numpy(), atol=1e-5)


def test_mono_array_at_another_rate_keeps_rate_and_length(model):
    stems, rate = model.separate((noise(1, 30_001)[0], 22050))
    assert rate == 22050
    assert all(stem.shape == (2, 30_001) for stem in stems.values())


def test_path_and_bytes_give_the_same_stems(model, tmp_path):
    path = tmp_path / "song.flac"
    sf.write(path, noise(2, 50_000, seed=1).T, 48000, subtype="PCM_24")
    from_path = model.separate(path)
    from_bytes = model.separate(path.read_bytes())
    assert from_path.sample_rate == from_bytes.sample_rate == 48000
    for name in model.stems:
        assert from_path.stems[name].shape == (2, 50_000)
        np.testing.assert_array_equal(from_path.stems[name], from_bytes.stems[name])


def test_one_off_separate_and_bad_input(tiny_repo):
    stems, _ = stemsplit.separate((noise(2, 10_000), 44100), model="tiny", repo=tiny_repo, overlap=0.5)
    assert set(stems) == {"drums", "bass", "other", "vocals"}
    with pytest.raises(stemsplit.errors.InputError, match="not audio|cannot decode"):
        stemsplit.separate(b"definitely not audio", model="tiny", repo=tiny_repo)
    with pytest.raises(ValueError, match="overlap"):
        stemsplit.load_model("tiny", repo=tiny_repo, overlap=2.0)


def test_float16_is_refused_on_cpu_only(tiny_repo, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match=r"^float16 is for GPUs; use auto \(bfloat16 here\)$"):
        stemsplit.load_model("tiny", repo=tiny_repo, device="cpu", precision="float16")
    bag = load_bag("tiny", tiny_repo)
    decide(Settings(precision="float16"), "cuda").check(bag)  # allowed wherever a GPU runs it
    decide(Settings(precision="bfloat16"), "cpu").check(bag)


@pytest.mark.parametrize("method", ["add", "minus"])
def test_two_stems_in_the_api_are_the_clis(tmp_path, tiny_repo, method):
    from click.testing import CliRunner

    from stemsplit.cli import main

    song = tmp_path / "song.wav"
    sf.write(song, noise(2, 50_000, seed=4).T, 44100, subtype="FLOAT")
    result = CliRunner().invoke(main, ["-n", "tiny", "--repo", str(tiny_repo), "--two-stems", "vocals", "--other-method",
                                       method, "--bit-depth", "32", "--clip-mode", "none", "-o", str(tmp_path / "out"),
                                       str(song)])
    assert result.exit_code == 0, result.output
    model = stemsplit.load_model("tiny", repo=tiny_repo, device="cpu", two_stems="vocals", other_method=method)
    stems, rate = model.separate(song)
    assert rate == 44100 and list(stems) == model.stems == ["vocals", "no_vocals"]
    for name, stem in stems.items():
        written, _ = sf.read(tmp_path / "out" / "tiny" / "song" / f"{name}.wav", dtype="float32")
        np.testing.assert_allclose(stem, written.T, atol=1e-6, rtol=0)
    if method == "minus":  # the mix minus vocals: the pair gives back the song
        np.testing.assert_allclose(stems["vocals"] + stems["no_vocals"], sf.read(song, dtype="float32")[0].T,
                                   atol=1e-5, rtol=0)


def test_unknown_stems_and_methods_in_the_api_are_settings_errors(tiny_repo):
    with pytest.raises(stemsplit.errors.SettingsError, match="unknown stem 'flute'; this model has drums"):
        stemsplit.load_model("tiny", repo=tiny_repo, two_stems="flute")
    with pytest.raises(stemsplit.errors.SettingsError, match="other_method must be one of add, minus"):
        stemsplit.load_model("tiny", repo=tiny_repo, two_stems="vocals", other_method="subtract")
