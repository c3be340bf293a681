"""`stemsplit --repo DIR -n NAME` against `demucs --repo DIR -n NAME` on an mdx-shaped bag of
random-weight networks in the reference's local layout (`<name>.yaml`, `<sig>-<sha8>.th`)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from demucs.demucs import Demucs as ReferenceDemucs
from demucs.hdemucs import HDemucs as ReferenceHDemucs

from oracle import perturbed_network
from v3_configs import SMALL_DEMUCS, SMALL_HDEMUCS

MIN_SDR = 100.0
SIGNATURES = ["d3d30001", "d3d30002", "d3d30003", "d3d30004"]
KINDS = [(ReferenceDemucs, SMALL_DEMUCS), (ReferenceDemucs, SMALL_DEMUCS),
         (ReferenceHDemucs, SMALL_HDEMUCS), (ReferenceHDemucs, SMALL_HDEMUCS)]
BAG = """models: ['d3d30001', 'd3d30002', 'd3d30003', 'd3d30004']
weights: [
  [1., 1., 0., 0.],
  [0., 1., 0., 0.],
  [1., 0., 1., 1.],
  [1., 0., 1., 1.],
]
segment: 2
"""


def package(reference_class: type, kwargs: dict, seed: int) -> bytes:
    """A legacy package as the reference saves its networks (klass, args, kwargs, state, training_args)."""
    network = perturbed_network(reference_class, kwargs, seed)
    buffer = io.BytesIO()
    torch.save({"klass": reference_class, "args": [], "kwargs": kwargs, "training_args": {"epochs": 1},
                "state": {key: value.half() for key, value in network.state_dict().items()}}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def mdx_repo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("repo")
    for seed, (signature, (reference_class, kwargs)) in enumerate(zip(SIGNATURES, KINDS)):
        content = package(reference_class, {**kwargs, "segment": 5}, seed)
        (folder / f"{signature}-{hashlib.sha256(content).hexdigest()[:8]}.th").write_bytes(content)
    (folder / "mdx_shaped.yaml").write_text(BAG)
    return folder


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=900)


def sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.square(reference).sum() / np.square(estimate - reference).sum()))


def test_stemsplit_equals_demucs_on_an_mdx_shaped_repo_bag(tmp_path, mdx_repo):
    rate = 44100
    t = np.arange(int(3.1 * rate)) / rate
    song = np.stack([0.4 * np.sin(2 * np.pi * 110 * t), 0.3 * np.sin(2 * np.pi * 440 * t + 1)], axis=1)
    song += 0.05 * np.random.default_rng(0).standard_normal(song.shape)
    sf.write(tmp_path / "song.wav", song.astype(np.float32), rate, subtype="FLOAT")

    theirs = run("demucs", "--repo", mdx_repo, "-n", "mdx_shaped", "-o", tmp_path / "demucs", "--float32",
                 "--shifts", "0", "-d", "cpu", tmp_path / "song.wav", cwd=tmp_path)
    assert theirs.returncode == 0, theirs.stderr
    ours = run("stemsplit", "--repo", mdx_repo, "-n", "mdx_shaped", "-o", tmp_path / "stemsplit",
               "--bit-depth", "32", "-d", "cpu", tmp_path / "song.wav", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr

    for stem in ["drums", "bass", "other", "vocals"]:
        expected, expected_rate = sf.read(tmp_path / "demucs" / "mdx_shaped" / "song" / f"{stem}.wav")
        actual, actual_rate = sf.read(tmp_path / "stemsplit" / "mdx_shaped" / "song" / f"{stem}.wav")
        assert actual_rate == expected_rate == rate and actual.shape == expected.shape == song.shape
        assert sdr(actual, expected) > MIN_SDR, stem
