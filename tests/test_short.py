"""Very short songs (issue 22, case 10): one sample, one STFT hop, 0.01 s give stems of their exact length
with a RoFormer, MDX23C and Spleeter, the same as the start of the stems of the song with silence after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from helpers import read, stemsplit
from mdxc_oracle import small_config
from test_mono import mono_roformer_files
from test_spleeter import SMALL, bag_of, randomised
from stemsplit.api import Separator
from stemsplit.bag import Bag, single_network_bag
from stemsplit.errors import InputError
from stemsplit.families.mdxc import build_network, read_config
from stemsplit.families.roformer import load_network
from stemsplit.separation import Settings, decide

RATE = 44100
LENGTHS = [1, 64, 441, 1024]  # a sample, a hop of the small MDX23C and Spleeter, 0.01 s, half the RoFormer's FFT
# The song with silence after it, to a RoFormer chunk (1 s of 441-sample hops: a song shorter than half its FFT
# is read as one chunk) or a few MDX23C and Spleeter frames (whose chunks do not depend on the song's length).
PADDED = {"roformer": 441 * 40, "mdx23c": 3072, "spleeter": 3072}


@pytest.fixture(scope="module")
def roformer_files(tmp_path_factory) -> tuple[Path, Path]:
    return mono_roformer_files(tmp_path_factory.mktemp("roformer"))


@pytest.fixture(scope="module")
def bags(roformer_files, tmp_path_factory) -> dict[str, Bag]:
    config = tmp_path_factory.mktemp("mdxc") / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(num_overlap=2, sample_rate=RATE)))
    torch.manual_seed(0)
    return {"roformer": single_network_bag("roformer", load_network(*roformer_files), ""),
            "mdx23c": single_network_bag("mdx23c", build_network(read_config(config)).eval(), ""),
            "spleeter": bag_of(randomised(SMALL))}


def separate(bag: Bag, song: np.ndarray) -> dict[str, np.ndarray]:
    return Separator(bag, decide(Settings(), "cpu")).separate((song, RATE)).stems


CASES = [(family, length) for family in ("roformer", "spleeter") for length in LENGTHS]
CASES += [("mdx23c", 1)]  # one: MDX23C's 256-frame chunks are slow on a CPU (20 s loaded)


@pytest.mark.parametrize("family, length", CASES)
def test_short_songs_give_the_stems_of_the_song_followed_by_silence(bags, family, length):
    song = (0.3 * np.random.default_rng(length).standard_normal((2, length))).astype(np.float32)
    stems = separate(bags[family], song)
    assert {stem.shape for stem in stems.values()} == {(2, length)}
    padded = separate(bags[family], np.pad(song, ((0, 0), (0, PADDED[family] - length))))
    for name, stem in stems.items():
        assert np.abs(stem).max() > 1e-6
        np.testing.assert_allclose(stem, padded[name][:, :length], atol=1e-6)


def test_the_command_separates_one_sample(tmp_path, roformer_files):
    checkpoint, config = roformer_files
    sf.write(tmp_path / "one.wav", np.full((1, 2), 0.5, np.float32), RATE, subtype="FLOAT")
    result = stemsplit("--checkpoint", checkpoint, "--config", config, tmp_path / "one.wav", "-o", tmp_path,
                       "--bit-depth", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {read(path)[0].shape for path in (tmp_path / "mono" / "one").glob("*.wav")} == {(2, 1)}


def test_a_network_failure_is_the_apis_input_error(bags, monkeypatch):
    """A RuntimeError inside a network (out of memory on a GPU, a size it cannot take) is an InputError."""
    network = bags["spleeter"].members[0].network

    def out_of_memory(mix: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

    monkeypatch.setattr(network, "forward", out_of_memory)
    with pytest.raises(InputError, match=r"^separating the audio failed: CUDA out of memory\. Tried to allocate "
                                         r"2\.00 GiB; try a shorter --segment, --batch-size 1 or -d cpu$"):
        separate(bags["spleeter"], np.zeros((2, 100), np.float32))
