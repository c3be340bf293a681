"""Local RoFormer checkpoints (`--checkpoint FILE --config FILE.yaml`) through the command and the API."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import read, sdr, stemsplit, tone
from roformer_oracle import roformer_files

EXACT = ("--bit-depth", "32", "--clip-mode", "none")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return roformer_files(tmp_path_factory.mktemp("roformer"), 1, 4)


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "song.wav"
    sf.write(path, tone(2.3, 44100), 44100, subtype="FLOAT")
    return path


def test_checkpoint_stems_match_the_oracle_and_null_against_the_mix(tmp_path, small, song):
    from roformer_oracle import oracle_demix

    oracle, checkpoint, config_path, config = small
    result = stemsplit("--checkpoint", checkpoint, "--config", config_path, song, "-o", tmp_path, *EXACT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "small1" / "song"
    assert sorted(p.name for p in folder.iterdir()) == [".vocals.wav.stemsplit.json", "no_vocals.wav", "vocals.wav"]
    mix, _ = read(song)
    with torch.no_grad():
        expected = oracle_demix(oracle, torch.from_numpy(mix.copy()), config)
    vocals, rate = read(folder / "vocals.wav")
    assert rate == 44100 and sdr(vocals, expected["vocals"]) > 90
    np.testing.assert_allclose(vocals + read(folder / "no_vocals.wav")[0], mix, atol=1e-6)


def test_stem_options_work_with_a_checkpoint(tmp_path, small, song):
    _, checkpoint, config_path, _ = small
    model = ("--checkpoint", checkpoint, "--config", config_path)
    full = stemsplit(*model, song, "-o", tmp_path / "full", *EXACT, cwd=tmp_path)
    only = stemsplit(*model, song, "-o", tmp_path / "only", "--stems", "no_vocals", *EXACT, cwd=tmp_path)
    piped = stemsplit(*model, song, "--stdout", "vocals", cwd=tmp_path, binary=True)
    assert (full.returncode, only.returncode, piped.returncode) == (0, 0, 0), only.stderr + piped.stderr
    assert sorted(p.name for p in (tmp_path / "only" / "small1" / "song").iterdir()) == [
        ".no_vocals.wav.stemsplit.json", "no_vocals.wav"]
    full_folder = tmp_path / "full" / "small1" / "song"
    np.testing.assert_array_equal(read(tmp_path / "only" / "small1" / "song" / "no_vocals.wav")[0],
                                  read(full_folder / "no_vocals.wav")[0])
    streamed, rate = read(io.BytesIO(piped.stdout))
    expected, _ = read(full_folder / "vocals.wav")
    assert rate == 44100 and streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected / max(1.01 * np.abs(expected).max(), 1.0), atol=1e-4)


@pytest.mark.parametrize("options, message", [
    (("--shifts", "2"), "shifts are for HT Demucs models"),
    (("--overlap", "0.5"), "overlap is for HT Demucs models; this model overlaps 4 chunks"),
    (("-n", "htdemucs"), "use either --checkpoint with --config, or -n/--repo"),
])
def test_options_that_do_not_apply_are_usage_errors(tmp_path, small, song, options, message):
    _, checkpoint, config_path, _ = small
    result = stemsplit("--checkpoint", checkpoint, "--config", config_path, *options, song, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "separated").exists()


def test_checkpoint_without_config_is_a_usage_error(tmp_path, small, song):
    result = stemsplit("--checkpoint", small[1], song, cwd=tmp_path)
    assert result.returncode == 2 and "--checkpoint and --config go together" in result.stderr


class Payload:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("kind", ["garbage", "malicious", "other shape"])
def test_bad_checkpoints_are_model_errors(tmp_path, small, song, kind):
    _, checkpoint, config_path, _ = small
    bad = tmp_path / "bad.ckpt"
    sentinel = tmp_path / "ran"
    if kind == "garbage":
        bad.write_bytes(b"\x80\x04not a checkpoint at all")
    elif kind == "malicious":
        bad.write_bytes(pickle.dumps({"state_dict": Payload(sentinel)}))
    else:
        state = torch.load(checkpoint)["state_dict"]
        torch.save({key: value[..., :1] if value.dim() else value for key, value in state.items()}, bad)
    result = stemsplit("--checkpoint", bad, "--config", config_path, song, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert not sentinel.exists() and not (tmp_path / "separated").exists()


def test_api_loads_a_checkpoint(small):
    import stemsplit

    _, checkpoint, config_path, _ = small
    model = stemsplit.load_model(checkpoint=checkpoint, config=config_path, device="cpu")
    mix = tone(1.2, 44100).T
    stems, rate = model.separate((mix, 44100))
    assert rate == 44100 and list(stems) == ["vocals", "no_vocals"]
    assert all(stem.shape == mix.shape for stem in stems.values())
    np.testing.assert_allclose(stems["vocals"] + stems["no_vocals"], mix, atol=1e-5)
