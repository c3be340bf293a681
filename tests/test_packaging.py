"""The distribution users install: its name, the `stemsplit` command and package inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
NAME = "stemsplit-cli"  # free on PyPI; `stemsplit` there is another project


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
    first_command = next(line for line in readme.splitlines() if line.startswith("python3 -m venv"))
    assert ".venv/bin/pip install -q torch==2.13.0 ./ && .venv/bin/stemsplit song.mp3" in first_command
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
