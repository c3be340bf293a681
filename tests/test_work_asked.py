"""Only the work asked for: `--stems`, `--two-stems` and `--other-method` run only the networks that feed
the stems written, and give the same stems as a full run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import TINY_KWARGS
from helpers import read, separate_tensor, stemsplit, tone
from oracle import perturbed_reference, safetensors_file
from stemsplit.bag import Bag, Member
from stemsplit.chunking import AlignedChunks

SOURCES = ["drums", "bass", "other", "vocals"]


@pytest.fixture(scope="module")
def specialists(tmp_path_factory) -> Path:
    """A `--repo` folder with `ft`: one tiny network per stem, each weighted only on its own, like htdemucs_ft."""
    folder = tmp_path_factory.mktemp("specialists")
    for index, source in enumerate(SOURCES):
        reference = perturbed_reference(TINY_KWARGS, seed=20 + index)
        (folder / f"0{source[:4]:0<4}000.safetensors").write_bytes(safetensors_file(reference, TINY_KWARGS))
    (folder / "ft.yaml").write_text(yaml.safe_dump({
        "models": [f"0{source[:4]:0<4}000" for source in SOURCES],
        "weights": [[float(i == k) for k in range(4)] for i in range(4)]}))
    return folder


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "song.wav"
    sf.write(path, tone(1.5, 44100), 44100, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, specialists, song) -> Path:
    out = tmp_path_factory.mktemp("full")
    result = stemsplit(song, "-n", "ft", "--repo", specialists, "-o", out, *EXACT, "-v", cwd=out)
    assert result.returncode == 0, result.stderr
    assert "model: ft, 4 of its 4 networks needed" in result.stderr
    return out / "ft" / "song"


EXACT = ("--bit-depth", "32", "--clip-mode", "none")


def networks_run(stderr: str) -> int:
    return int(re.search(r"model: ft, (\d) of its 4 networks needed", stderr)[1])


def test_one_stem_runs_one_network_and_matches_the_full_run(tmp_path, specialists, song, full_run):
    result = stemsplit(song, "-n", "ft", "--repo", specialists, "-o", tmp_path, "--stems", "vocals", *EXACT, "-v",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert networks_run(result.stderr) == 1
    assert sorted(p.name for p in (tmp_path / "ft" / "song").iterdir()) == [".vocals.wav.stemsplit.json", "vocals.wav"]
    np.testing.assert_array_equal(read(tmp_path / "ft" / "song" / "vocals.wav")[0], read(full_run / "vocals.wav")[0])


def test_two_stems_minus_runs_one_network_and_nulls_against_the_mix(tmp_path, specialists, song, full_run):
    result = stemsplit(song, "-n", "ft", "--repo", specialists, "-o", tmp_path, "--two-stems", "vocals",
                       "--other-method", "minus", *EXACT, "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert networks_run(result.stderr) == 1
    folder = tmp_path / "ft" / "song"
    vocals, rest = read(folder / "vocals.wav")[0], read(folder / "no_vocals.wav")[0]
    np.testing.assert_array_equal(vocals, read(full_run / "vocals.wav")[0])
    np.testing.assert_allclose(vocals + rest, read(song)[0], atol=1e-6)


def test_two_stems_add_sums_the_other_stems_of_a_full_run(tmp_path, specialists, song, full_run):
    result = stemsplit(song, "-n", "ft", "--repo", specialists, "-o", tmp_path, "--two-stems", "vocals",
                       *EXACT, "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert networks_run(result.stderr) == 4
    others = sum(read(full_run / f"{stem}.wav")[0] for stem in ("drums", "bass", "other"))
    np.testing.assert_allclose(read(tmp_path / "ft" / "song" / "no_vocals.wav")[0], others, atol=1e-6)


class Constant(torch.nn.Module):
    """A stand-in network whose every source is a fixed fraction of the mix."""

    def __init__(self, sources: list[str], fraction: float):
        super().__init__()
        self.sources, self.fraction = sources, fraction
        self.samplerate, self.audio_channels = 44100, 2
        self.chunking = AlignedChunks(4410, 2)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.fraction * mix[:, None].expand(-1, len(self.sources), -1, -1)


def ensemble() -> Bag:
    vocals = Member(Constant(["vocals"], 0.5), {"vocals": 1.0})
    drums = Member(Constant(SOURCES, 0.1), {"drums": 1.0, "bass": 0.0})
    bass = Member(Constant(SOURCES, 0.2), {"bass": 1.0})
    return Bag("ensemble", SOURCES, [vocals, drums, bass], residual="other")


def test_a_residual_stem_needs_every_network_and_a_computed_one_only_its_own():
    bag = ensemble()
    assert bag.needing(["other"]) is bag
    assert [m.network.fraction for m in bag.needing(["vocals"]).members] == [0.5]
    assert [m.network.fraction for m in bag.needing(["drums", "vocals"]).members] == [0.5, 0.1]
    minus = bag.needing(["bass", "no_bass"], residual="no_bass")
    assert [m.network.fraction for m in minus.members] == [0.2] and minus.residual == "no_bass"


def test_ensemble_stems_sum_to_the_mix():
    mix = 0.3 * torch.randn(2, 30000, generator=torch.Generator().manual_seed(0))
    stems = separate_tensor(ensemble(), mix)
    torch.testing.assert_close(stems[SOURCES.index("vocals")], 0.5 * mix)
    torch.testing.assert_close(stems[SOURCES.index("drums")], 0.1 * mix)
    torch.testing.assert_close(stems[SOURCES.index("bass")], 0.2 * mix)
    torch.testing.assert_close(stems.sum(0), mix, atol=1e-6, rtol=0)
