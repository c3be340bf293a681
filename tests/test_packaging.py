"""The distribution users install: its name, the `stemsplit` command and package inside it."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NAME = "stemsplit-cli"  # free on PyPI; `stemsplit` there is another project
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def test_wheel_is_named_for_pypi_and_keeps_the_command_and_package(tmp_path):
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"] == NAME
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(ROOT / "stemsplit", source / "stemsplit", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    wheels = list((tmp_path / "dist").iterdir())
    assert [wheel.name for wheel in wheels] == ["stemsplit_cli-0.1.0-py3-none-any.whl"]
    with zipfile.ZipFile(wheels[0]) as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read("stemsplit_cli-0.1.0.dist-info/METADATA").decode()
        entry_points = wheel.read("stemsplit_cli-0.1.0.dist-info/entry_points.txt").decode()
        licence = wheel.read("stemsplit_cli-0.1.0.dist-info/licenses/LICENSE").decode()
    assert f"\nName: {NAME}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata and "\nLicense-File: LICENSE\n" in metadata
    assert licence == (ROOT / "LICENSE").read_text() and licence.startswith("MIT License\n")
    assert "[console_scripts]\nstemsplit = stemsplit.cli:main\n" in entry_points
    assert {"stemsplit/__init__.py", "stemsplit/cli.py", "stemsplit/stemfile.py", "stemsplit/models.toml",
            "stemsplit/networks/htdemucs.py", "stemsplit/networks/roformer.py", "stemsplit/networks/spleeter.py",
            "stemsplit/families/__init__.py", "stemsplit/families/spleeter.py",
            "stemsplit/configs/vocals_mel_band_roformer_kj.yaml"} <= files


def test_readme_first_command_installs_the_checkout_by_that_name():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert commands(readme)[0] == (f"python3 -m venv .venv && .venv/bin/pip install -q --extra-index-url {CPU_INDEX} "
                                   "torch==2.13.0 ./ && .venv/bin/stemsplit song.mp3")
    assert f"as the distribution **`{NAME}`**" in readme


def commands(text: str) -> list[str]:
    """The `python3 -m venv .venv ...` command lines of a text, lines ending in a backslash joined."""
    lines = text.replace("\\\n", " ").splitlines()
    return [" ".join(line.split()) for line in lines if line.startswith("python3 -m venv .venv ")]


def test_ci_runs_the_readme_test_command_first():
    test_command = commands((ROOT / "README.md").read_text(encoding="utf-8"))[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.endswith(".venv/bin/python -m pytest -q")
    assert commands(ci) == [f"{test_command} || failed=1"]
    assert ci.index("python3 -m venv .venv ") < ci.index("STEMSPLIT_FFMPEG=")


# What the install commands resolve to (pip install --dry-run --report), where their index can be reached

def reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def dry_run(tmp_path: Path, *args: str) -> dict[str, str]:
    """The distributions `pip install ARGS` would install, name -> version, with nothing installed."""
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--no-build-isolation", "--report",
                    str(report), *args], check=True, timeout=900)
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def test_the_cpu_command_resolves_to_the_cpu_build_of_torch(tmp_path):
    if not reachable("download.pytorch.org"):
        pytest.skip("download.pytorch.org (PyTorch's CPU index) cannot be reached from this machine, so what the "
                    "CPU command resolves to there is not checked; pip goes on with its other indexes")
    first = commands((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    pip_args = shlex.split(first.split(".venv/bin/pip install -q ")[1].split(" && ")[0])
    installed = dry_run(tmp_path, *[str(ROOT) if arg == "./" else arg for arg in pip_args])
    assert installed["torch"] == "2.13.0+cpu" and NAME in installed
    assert not [name for name in installed if name.startswith("nvidia-")], installed


def test_pypi_torch_on_linux_is_the_cuda_build_the_nvidia_command_takes(tmp_path):
    """Why the CPU command names PyTorch's CPU index: PyPI's torch 2.13.0 for Linux x86_64 brings CUDA 13."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        pytest.skip("PyPI's CUDA build of torch is the Linux x86_64 one")
    if os.environ.get("STEMSPLIT_TEST_INSTALL") != "1" or not reachable("pypi.org"):
        pytest.skip("resolving PyPI's torch 2.13.0 with its CUDA wheels takes minutes (3.5 here) and pypi.org; "
                    "set STEMSPLIT_TEST_INSTALL=1 to run it")
    installed = dry_run(tmp_path, "--isolated", "--ignore-installed", "--index-url", "https://pypi.org/simple",
                        "torch==2.13.0")
    assert installed["torch"] == "2.13.0" and "nvidia-cudnn-cu13" in installed, installed
