from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from oracle import perturbed_reference, safetensors_file
from reference_configs import SMALL_KWARGS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINY_KWARGS = {**SMALL_KWARGS, "segment": Fraction(1, 1)}


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    folder = SHARED / "audio"
    if not folder.is_dir():
        pytest.skip("../shared/audio is not available")
    return folder


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A `--repo` folder holding `tiny`, a small random-weight HT Demucs in the official format."""
    folder = tmp_path_factory.mktemp("repo")
    reference = perturbed_reference(TINY_KWARGS, seed=7)
    (folder / "0tiny000.safetensors").write_bytes(safetensors_file(reference, TINY_KWARGS))
    (folder / "tiny.yaml").write_text("models: ['0tiny000']\n")
    return folder
