"""Spleeter against spleeter 2.4.2 itself, with random weights of its three configurations.

Spleeter pins TensorFlow 2.12.1, numpy < 2 and Python < 3.12, so it lives in its own
environment: STEMSPLIT_SPLEETER_PYTHON (default /work/venvs/spleeter/bin/python, made with
`python3.11 -m venv /work/venvs/spleeter && /work/venvs/spleeter/bin/pip install spleeter==2.4.2`).
tests/spleeter_oracle.py runs there: it builds spleeter's graph, draws every variable at
random, saves them as a TensorFlow checkpoint and lets spleeter's Separator separate the
song; our network loads that checkpoint folder as `--checkpoint DIR` does (tfbundle.py, and
the family's mapping of spleeter's layer names), and the variables' values come back in an .npz.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import relative_error, separate_tensor
from stemsplit.families import family
from stemsplit.family import LocalFiles
from stemsplit.networks.spleeter import PRESETS, Spleeter, SpleeterConfig
from stemsplit.tfbundle import TensorBundle

PYTHON = Path(os.environ.get("STEMSPLIT_SPLEETER_PYTHON", "/work/venvs/spleeter/bin/python"))
ORACLE = Path(__file__).with_name("spleeter_oracle.py")

pytestmark = pytest.mark.skipif(not PYTHON.is_file(), reason=f"no spleeter 2.4.2 environment at {PYTHON}")


def run_oracle(name: str, song: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    np.save(folder / "song.npy", song.T)
    subprocess.run([str(PYTHON), str(ORACLE), name, str(folder / "song.npy"), str(folder)], check=True,
                   capture_output=True)
    return dict(np.load(folder / "oracle.npz"))


def test_the_configurations_are_spleeters_json():
    resources = next(PYTHON.parent.parent.glob("lib/python*/site-packages/spleeter/resources"))
    for stems, preset in PRESETS.items():
        params = json.loads((resources / f"{stems}stems.json").read_text())
        assert SpleeterConfig.from_params(params) == preset


def song(seconds: float, seed: int) -> np.ndarray:
    """Two channels of tones and noise, (2, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 44100)) / 44100
    tones = [0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 331 * t + 1)]
    return (np.stack(tones) + 0.1 * rng.standard_normal((2, t.size))).astype(np.float32)


@pytest.mark.parametrize("stems, seconds", [(2, 13.3), (4, 3.1), (5, 3.1)], ids=["2stems", "4stems", "5stems"])
def test_matches_spleeter_with_random_weights(stems, seconds, tmp_path):
    """2stems over two segments (a boundary between them), 4stems (ELU) and 5stems (softmax) over one."""
    mix = song(seconds, stems)
    arrays = run_oracle(f"{stems}stems", mix, tmp_path)
    checkpoint = tmp_path / f"{stems}stems"
    bundle = TensorBundle(checkpoint / "model")
    for key, value in arrays.items():
        if key.startswith("variable/"):
            assert np.array_equal(bundle.read(key[len("variable/"):-len(":0")]), value), key
    bag = family("spleeter").local_bag(LocalFiles(checkpoint))
    network = bag.members[0].network
    assert network.config == PRESETS[stems]
    with torch.inference_mode():
        ours = separate_tensor(bag, torch.from_numpy(mix))
        masks = whole_song_masks(network, torch.from_numpy(mix))
    for index, instrument in enumerate(network.sources):
        reference = torch.from_numpy(arrays[f"stem/{instrument}"]).T
        mask = torch.from_numpy(arrays[f"mask/{instrument}"])  # (frames, bins, channels)
        assert ours.shape[1:] == reference.shape
        errors = relative_error(ours[index], reference), relative_error(masks[index].permute(2, 1, 0), mask)
        print(f"{stems}stems {instrument}: relative error of the stem {errors[0]:.2e}, of the mask {errors[1]:.2e}")
        assert max(errors) < 1e-4, instrument


def whole_song_masks(network: Spleeter, mix: torch.Tensor) -> torch.Tensor:
    """(instruments, channels, bins, frames): spleeter's frames of the whole song, the network run directly."""
    config = network.config
    padded_length = mix.shape[-1] + config.frame_length
    frames = -(-padded_length // config.frame_step)
    padded = F.pad(mix, (config.frame_length, (frames - 1) * config.frame_step - mix.shape[-1]))
    stft = network.stft(padded[None])
    return network.masks(network.estimates(network.segments(stft.abs())), stft.shape[-1])[0]
