from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, set before torch loads
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import signal
import subprocess
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from fake_family import CALLS, registered, write_repo
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


@pytest.fixture(scope="session")
def fake_folder(tmp_path_factory) -> Path:
    gains = {"drums": 0.1, "bass": 0.2, "other": 0.3, "vocals": 0.4}
    return write_repo(tmp_path_factory.mktemp("fake-repo"), {"tiny": {"0tiny000": gains}})


@pytest.fixture
def fake_repo(fake_folder) -> Iterator[Path]:
    """Like `tiny_repo`, but its `tiny` is a network of the test-only `fake` family (see fake_family.py,
    registered for the test): for the command's plumbing, where HT Demucs's arithmetic is not what is proven."""
    CALLS.clear()
    with registered():
        yield fake_folder


@pytest.fixture
def in_process(monkeypatch):
    """Run the command in this process with click's runner: no interpreter start and torch import (about 2 s a
    run), for checks that need no signals, pipes or limits. Its temporary files go to `tmp`."""
    from click.testing import CliRunner

    from stemsplit.cli import main

    def run(*args: object, tmp: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        tmp.mkdir(parents=True, exist_ok=True)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        handler = signal.getsignal(signal.SIGTERM)
        try:
            result = CliRunner().invoke(main, list(map(str, args)), input=stdin,
                                        env={"HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
        finally:
            signal.signal(signal.SIGTERM, handler)  # the command installs its own
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)
    return run
