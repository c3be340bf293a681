"""Only the work asked for: `--stems`, `--two-stems` and `--other-method` run only the networks that feed
the stems written, and give the same stems as a full run."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from fake_family import CALLS, package, registered
from helpers import read, separate_tensor, tone
from stemsplit.bag import Bag, Member
from stemsplit.chunking import AlignedChunks

SOURCES = ["drums", "bass", "other", "vocals"]


def signature(source: str) -> str:
    return f"0{source[:4]:0<4}000"


SPECIALISTS = [signature(source) for source in SOURCES]


@pytest.fixture(scope="module")
def specialists(tmp_path_factory) -> Path:
    """A `--repo` folder with `ft`: one network per stem, each weighted only on its own, like htdemucs_ft. They
    are of the test-only fake family, each source a gain times the mix, and count their calls."""
    folder = tmp_path_factory.mktemp("specialists")
    for index, name in enumerate(SPECIALISTS):
        gains = {stem: 0.1 * (index + 1) + 0.01 * k for k, stem in enumerate(SOURCES)}  # every network its own
        (folder / f"{name}.safetensors").write_bytes(package(name, gains))
    (folder / "ft.yaml").write_text(yaml.safe_dump({
        "models": SPECIALISTS, "weights": [[float(i == k) for k in range(4)] for i in range(4)]}))
    return folder


@pytest.fixture
def ft(specialists) -> Iterator[Path]:
    CALLS.clear()
    with registered():
        yield specialists


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "song.wav"
    sf.write(path, tone(1.5, 44100), 44100, subtype="FLOAT")
    return path


EXACT = ("--bit-depth", "32", "--clip-mode", "none")


def separate(in_process, song: Path, ft: Path, out: Path, *options: str) -> Counter[str]:
    """Run `ft` on `song`; the calls of each of its networks, after checking what the command says it ran."""
    CALLS.clear()
    result = in_process(song, "-n", "ft", "--repo", ft, "-o", out, *EXACT, "-v", *options, tmp=out / "tmp")
    assert result.returncode == 0, result.stderr
    needed = int(re.search(r"model: ft, (\d) of its 4 networks needed", result.stderr)[1])
    assert needed == len(CALLS), (result.stderr, CALLS)
    return Counter(CALLS)


@pytest.fixture
def full_run(tmp_path_factory, in_process, ft, song) -> Path:
    out = tmp_path_factory.mktemp("full")
    calls = separate(in_process, song, ft, out)
    assert set(calls) == set(SPECIALISTS) and len(set(calls.values())) == 1  # each network over the whole song
    return out / "ft" / "song"


def test_one_stem_runs_one_network_and_matches_the_full_run(tmp_path, in_process, ft, song, full_run):
    calls = separate(in_process, song, ft, tmp_path, "--stems", "vocals")
    assert list(calls) == [signature("vocals")]
    assert sorted(p.name for p in (tmp_path / "ft" / "song").iterdir()) == [".vocals.wav.stemsplit.json", "vocals.wav"]
    np.testing.assert_array_equal(read(tmp_path / "ft" / "song" / "vocals.wav")[0], read(full_run / "vocals.wav")[0])


def test_two_stems_minus_runs_one_network_and_nulls_against_the_mix(tmp_path, in_process, ft, song, full_run):
    calls = separate(in_process, song, ft, tmp_path, "--two-stems", "vocals", "--other-method", "minus")
    assert list(calls) == [signature("vocals")]
    folder = tmp_path / "ft" / "song"
    vocals, rest = read(folder / "vocals.wav")[0], read(folder / "no_vocals.wav")[0]
    np.testing.assert_array_equal(vocals, read(full_run / "vocals.wav")[0])
    np.testing.assert_allclose(vocals + rest, read(song)[0], atol=1e-6)


def test_two_stems_add_sums_the_other_stems_of_a_full_run(tmp_path, in_process, ft, song, full_run):
    calls = separate(in_process, song, ft, tmp_path, "--two-stems", "vocals")
    assert set(calls) == set(SPECIALISTS)
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
