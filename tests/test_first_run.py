"""A newcomer's first minutes (issue 24): inputs and settings refused before any model is fetched,
`stemsplit download` for offline use, and what `models`, `--help` and `help(stemsplit)` show."""

from __future__ import annotations

import hashlib
import json
import os
import pydoc
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import soundfile as sf
from click.testing import CliRunner

from helpers import error_lines, stemsplit, tone
from hub_server import HubServer
from stemsplit.catalogue import read_catalogue
from stemsplit.cli import main
from stemsplit.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_SIZES = ROOT.parent / "shared" / "reference" / "weights-sha256.txt"
SOURCES = ["drums", "bass", "other", "vocals"]
REPO_ID, COMMIT, WEIGHTS = "tester/FirstRun", "13579bdf13579bdf13579bdf13579bdf13579bdf", "0tiny000.safetensors"


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, tone(0.5, 44100), 44100)
    return path


@pytest.fixture
def counting_hub(tmp_path):
    """A loopback Hub holding nothing, which counts the requests it gets; the environment of a machine online."""
    with HubServer() as hub:
        env = {key: value for key, value in os.environ.items()
               if key not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "XDG_CACHE_HOME")}
        yield hub, {**env, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}


def run_online(env: dict[str, str], *args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stemsplit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# 2. Inputs and settings checked before any model is loaded or downloaded

def test_a_typo_d_input_offline_is_exit_1_within_a_second(tmp_path):
    start = time.perf_counter()
    result = stemsplit("nosuch.mp3", cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    seconds = time.perf_counter() - start
    assert (result.returncode, result.stderr) == (1, "error: nosuch.mp3: no such file\n")
    assert seconds < 1.0, f"took {seconds:.2f} s"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, code, message", [
    (("--shifts", "50"), 2, "Invalid value for '--shifts': 50 is not in the range 0<=x<=20."),
    (("--overlap", "0.95"), 2, "Invalid value for '--overlap': 0.95 is not in the range 0<=x<=0.9."),
    (("--segment", "0"), 2, "Invalid value for '--segment': 0.0 is not in the range x>0."),
    (("--batch-size", "0"), 2, "Invalid value for '--batch-size': 0 is not in the range x>=1."),
    (("--shard", "2/2"), 2, "Invalid value for --shard: '2/2' is not I/N with 0 <= I < N"),
    (("--precision", "float16", "-d", "cpu"), 2, "Invalid value for --precision: "),
    (("nosuch.flac",), 1, "nosuch.flac: no such file"),
], ids=["shifts", "overlap", "segment", "batch-size", "shard", "precision", "missing-input"])
def test_bad_settings_and_inputs_fail_without_asking_the_hub(counting_hub, song, tmp_path, args, code, message):
    hub, env = counting_hub
    result = run_online(env, *args, *([song] if code == 2 else []), cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert len(error_lines(result.stderr)) == 1 and error_lines(result.stderr)[0].startswith(f"error: {message}")
    assert hub.requests == []
    assert not (tmp_path / "hf").exists()


def test_the_counting_hub_sees_a_download_that_valid_settings_start(counting_hub, song, tmp_path):
    """The control of the test above: the same command with settings in range asks the Hub for the model."""
    hub, env = counting_hub
    result = run_online(env, "--shifts", "1", song, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert any(path.startswith("/adefossez/HTDemucs/resolve/") for _, path in hub.requests), hub.requests


# 3. `stemsplit download` and `stemsplit models`

@pytest.fixture
def tiny_hub(tmp_path, monkeypatch, tiny_repo):
    """The loopback Hub serving `tiny` of a catalogue of its own, the Hub client and cache pointed at it."""
    weights = (tiny_repo / WEIGHTS).read_bytes()
    catalogue = tmp_path / "models.toml"
    catalogue.write_text(f"""default = "tiny"

[tiny]
family = "htdemucs"
description = "the tiny test model"
licence = "MIT"
stems = {json.dumps(SOURCES)}
repo = "{REPO_ID}"
revision = "{COMMIT}"

[[tiny.files]]
name = "{WEIGHTS}"
size = {len(weights)}
sha256 = "{hashlib.sha256(weights).hexdigest()}"
shares = [1.0, 1.0, 1.0, 1.0]
""")
    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once, at its import
    with HubServer() as hub:
        hub.add(REPO_ID, COMMIT, WEIGHTS, weights)
        yield hub, {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": None,
                    "HF_HUB_CACHE": None, "XDG_CACHE_HOME": None, "COLUMNS": "200"}


def invoke(env: dict[str, str | None], *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(map(str, args)), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_download_fetches_a_model_that_then_runs_offline(tiny_hub, song, tmp_path):
    hub, env = tiny_hub
    code, stdout, _ = invoke(env, "models")
    assert code == 0 and stdout.splitlines()[3].endswith("; cached no")
    code, _, stderr = invoke(env, "download", "tiny")
    assert code == 0, stderr
    done, cache = stderr.splitlines()[-2:]
    assert done.startswith("tiny: downloaded and checked (about ") and done.endswith(" MB)")
    assert cache.startswith(f"cache: {Path(env['HF_HOME']) / 'hub'} (HF_HOME moves it); files from URLs: ")
    assert ("GET", f"/{REPO_ID}/resolve/{COMMIT}/{WEIGHTS}") in hub.requests
    assert invoke(env, "models")[1].splitlines()[3].endswith("; cached yes")

    asked = len(hub.requests)
    code, _, stderr = invoke(env, "download", "tiny")
    assert code == 0 and stderr.splitlines()[-2].startswith("tiny: already downloaded and checked"), stderr
    assert len(hub.requests) == asked  # a pinned commit in the cache needs no request
    hub.stop()

    code, _, stderr = invoke({**env, "HF_HUB_OFFLINE": "1"}, song, "-o", tmp_path / "out")
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "out" / "tiny" / "song").glob("*.wav")) == \
        sorted(f"{stem}.wav" for stem in SOURCES)


def test_download_of_an_unknown_model_is_one_error_line_and_exit_3(tiny_hub):
    hub, env = tiny_hub
    code, _, stderr = invoke(env, "download", "nosuch")
    assert code == 3 and error_lines(stderr) == [
        "error: unknown model 'nosuch'; known models: tiny (or use --repo DIR, or --checkpoint FILE --config FILE)"]
    assert hub.requests == []


def test_models_shows_the_published_download_sizes(tmp_path):
    result = stemsplit("models", cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    lines = result.stdout.splitlines()
    starts = {line.split(":")[0].removesuffix(" (default)"): at for at, line in enumerate(lines)
              if not line.startswith(" ")}
    sizes = {name: lines[starts[name] + 3].split("; download ")[1] for name in
             ("htdemucs", "htdemucs_ft", "htdemucs_6s", "mel_band_roformer_kim", "vocals_roformer_drums_bass_ft")}
    assert sizes == {"htdemucs": "about 84 MB; cached no", "htdemucs_ft": "about 337 MB; cached no",
                     "htdemucs_6s": "about 55 MB; cached no", "mel_band_roformer_kim": "size not published; cached no",
                     "vocals_roformer_drums_bass_ft": "size not published; cached no"}


def test_catalogue_sizes_are_the_published_ones():
    if not PUBLISHED_SIZES.is_file():
        pytest.skip(f"{PUBLISHED_SIZES} is not available (../shared is absent)")
    published = {}
    for line in PUBLISHED_SIZES.read_text().splitlines():
        fields = line.split()
        if not line.startswith("#") and len(fields) >= 3 and fields[1].isdigit():
            published[fields[2]] = int(fields[1])
    files = [file for info in read_catalogue().values() for file in info.files
             if file.size is not None and file.legacy is not None]
    assert len(files) == 6
    assert all(file.size == published[file.legacy] for file in files)


@pytest.mark.parametrize("size", ["-5", '"84 MB"', "1.5"])
def test_a_size_that_is_not_a_count_of_bytes_is_refused(tmp_path, size):
    text = (ROOT / "models.toml").read_text().replace("size = 84141911", f"size = {size}", 1)
    (tmp_path / "models.toml").write_text(text)
    with pytest.raises(ModelError, match="'htdemucs' is malformed: 955717e8.safetensors: size must be a positive"):
        read_catalogue(tmp_path / "models.toml")


# 4. What the command line and the package say about themselves

START = """
import sys
from stemsplit.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    print(f"exit {exit.code}; torch imported: {'torch' in sys.modules}")
"""


@pytest.mark.parametrize("args", [["--help"], ["models"], ["download", "--help"], ["nosuch.mp3"], ["queries"],
                                  ["--query", "dog", "-n", "htdemucs", "song.mp3"]])
def test_start_up_imports_no_torch(tmp_path, args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", START, *args], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert result.stdout.splitlines()[-1].endswith("torch imported: False"), result.stdout + result.stderr


def test_help_lists_every_command_and_the_version(tmp_path):
    result = stemsplit("--help", cwd=tmp_path)
    assert result.returncode == 0
    commands = result.stdout.split("Commands:\n")[1].split("\n\n")[0]
    assert [line.split()[0] for line in commands.splitlines()] == ["download", "models", "queries", "separate"]
    assert "--version" in result.stdout and "--shifts INTEGER RANGE" in result.stdout
    assert result.stdout.startswith("Usage: stemsplit [separate] [OPTIONS] INPUTS...\n")
    assert stemsplit("--version", cwd=tmp_path).stdout == "stemsplit, version 0.1.0\n"


def test_the_api_is_visible_to_dir_and_help():
    import stemsplit

    assert {"separate", "load_model", "Separator", "Separated", "__version__"} <= set(dir(stemsplit))
    text = pydoc.render_doc(stemsplit, renderer=pydoc.plaintext)
    assert "load_model(" in text and "separate(" in text
