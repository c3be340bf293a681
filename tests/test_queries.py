"""`--query` / `--query-audio` (issue 19 item 1): one stem and its residual per query, at the input's rate,
channels and length, each pair summing to the mix; conditions computed once per query; records, --json,
--stdout, the API; bad queries refused with one error line. The separator is tests/fake_query_family.py's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import fake_query_family as fake
from helpers import error_lines, read, sdr, tone
from hub_server import HubServer
from stemsplit.cli import main
from stemsplit.queries import Queries, stem_name

REPO_ID, COMMIT, WEIGHTS = "tester/Query", "2468ace02468ace02468ace02468ace02468ace0", "query.safetensors"
RATE, SECONDS, SCALE = 44100, 4.5, 1.5


def entry(name: str, takes: list[str], weights: bytes) -> str:
    return f"""
[{name}]
family = "fake_query"
job = "query"
queries = {json.dumps(takes)}
description = "a test query model"
licence = "MIT"
stems = ["<query>", "no_<query>"]
repo = "{REPO_ID}"
revision = "{COMMIT}"

[[{name}.files]]
name = "{WEIGHTS}"
sha256 = "{hashlib.sha256(weights).hexdigest()}"
"""


@pytest.fixture
def query_hub(tmp_path, monkeypatch):
    """A catalogue of `fq` (text and examples), `fq_text` (text only) and `plain` (no queries), served by a
    loopback Hub."""
    weights = fake.weights(SCALE)
    catalogue = tmp_path / "models.toml"
    catalogue.write_text('default = "plain"\ndefault_query = "fq"\n' + entry("fq", ["text", "audio"], weights)
                         + entry("fq_text", ["text"], weights) + f"""
[plain]
family = "htdemucs"
description = "not a query model"
licence = "MIT"
stems = ["drums", "bass", "other", "vocals"]
repo = "{REPO_ID}"
revision = "{COMMIT}"

[[plain.files]]
name = "none.safetensors"
sha256 = "{'0' * 64}"
""")
    monkeypatch.setattr("stemsplit.catalogue.CATALOGUE", catalogue)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with fake.registered(), HubServer() as hub:
        hub.add(REPO_ID, COMMIT, WEIGHTS, weights)
        yield {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": None,
               "HF_HUB_CACHE": None, "XDG_CACHE_HOME": None, "COLUMNS": "200"}


def invoke(env, *args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(map(str, args)), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """Low tones, which the fake separator's 16 kHz keeps."""
    path = tmp_path_factory.mktemp("query-song") / "song.wav"
    t = np.arange(int(SECONDS * RATE)) / RATE
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t + 1)], 1),
             RATE, subtype="FLOAT")
    return path


def example(folder: Path, name: str, amplitude: float) -> Path:
    path = folder / name
    sf.write(path, amplitude * tone(1.0, 22050, channels=1, seed=3), 22050)
    return path


def test_each_query_writes_its_stem_and_residual_which_sum_to_the_mix(query_hub, song, tmp_path):
    code, _, stderr = invoke(query_hub, song, "--query", "acoustic guitar", "--query", " Bass \t drum ",
                             "--bit-depth", "32", "-o", tmp_path / "out")
    assert code == 0, stderr
    folder = tmp_path / "out" / "fq" / "song"
    assert sorted(path.name for path in folder.glob("*.wav")) == sorted(
        ["acoustic guitar.wav", "no_acoustic guitar.wav", "Bass drum.wav", "no_Bass drum.wav"])
    mix, _ = read(song)
    for query in ("acoustic guitar", "Bass drum"):
        stem, rate = read(folder / f"{query}.wav")
        rest, _ = read(folder / f"no_{query}.wav")
        assert rate == RATE and stem.shape == mix.shape == rest.shape
        assert np.abs(stem + rest - mix).max() < 1e-5
        assert sdr(stem, SCALE * fake.text_gain(query) * mix) > 30
    segments = -(-int(SECONDS * fake.SAMPLERATE) // fake.SEGMENT)
    assert fake.CALLS == {"acoustic guitar": segments, "Bass drum": segments}  # both channels in one call
    assert fake.EMBEDDED == {"acoustic guitar": 1, "Bass drum": 1}
    assert fake.TOWERS == {"text": 1}  # text queries never load the audio tower


def test_an_example_recording_queries_by_its_file_name(query_hub, song, tmp_path):
    quiet = example(tmp_path, "tabla.wav", 0.5)
    code, stdout, stderr = invoke(query_hub, song, "--query-audio", quiet, "--json", "-o", tmp_path / "out")
    assert code == 0, stderr
    assert set(json.loads(stdout)["outputs"]) == {"tabla", "no_tabla"}
    assert fake.TOWERS == {"audio": 1} and fake.EMBEDDED == {"tabla.wav": 1}
    samples, _ = sf.read(quiet, dtype="float32")
    gain = SCALE * float(np.sqrt(np.mean(np.square(samples))))
    stem, _ = read(tmp_path / "out" / "fq" / "song" / "tabla.wav")
    mix, _ = read(song)
    assert sdr(stem, gain * mix) > 30


def test_skip_existing_records_the_queries_and_the_examples_content(query_hub, song, tmp_path):
    args = (song, "--skip-existing", "-o", tmp_path / "out", "--json")
    first = example(tmp_path, "tabla.wav", 0.5)
    assert json.loads(invoke(query_hub, *args, "--query-audio", first)[1])["status"] == "done"
    assert json.loads(invoke(query_hub, *args, "--query-audio", first)[1])["status"] == "skipped"
    example(tmp_path, "tabla.wav", 0.25)  # the same name, other audio: other stems
    assert json.loads(invoke(query_hub, *args, "--query-audio", first)[1])["status"] == "done"
    record = next((tmp_path / "out" / "fq" / "song").glob("*.json"), None) or next(
        (tmp_path / "out" / "fq" / "song").glob(".*"))
    assert "tabla.wav=" in record.read_text()


def test_stdout_writes_one_querys_residual(query_hub, song, tmp_path):
    result = CliRunner().invoke(main, list(map(str, (song, "--query", "harp", "--query", "organ", "--stdout",
                                                     "no_harp", "--bit-depth", "32"))), env=query_hub)
    assert result.exit_code == 0, result.stderr
    (tmp_path / "rest.wav").write_bytes(result.stdout_bytes)
    rest, rate = read(tmp_path / "rest.wav")
    mix, _ = read(song)
    assert rate == RATE and rest.shape == mix.shape
    assert sdr(rest, (1 - SCALE * fake.text_gain("harp")) * mix) > 30
    assert set(fake.CALLS) == {"harp"}  # the other query's network is not run for this output


@pytest.mark.parametrize("args, code, message", [
    (("--query", "   "), 2, "a query needs words"),
    (("--query-audio", "missing.wav"), 1, "--query-audio missing.wav: not a readable file"),
    (("--query", "harp", "-n", "plain"), 2, "model 'plain' separates fixed stems and takes no queries"),
    (("-n", "fq"), 2, "model 'fq' separates what it is asked for: give --query TEXT or --query-audio FILE"),
    (("--query-audio", "{song}", "-n", "fq_text"), 2, "model 'fq_text' takes free text, not --query-audio"),
    (("--query", "harp", "--two-stems", "harp"), 2, "drop --stems/--two-stems"),
    (("--query", "harp", "--query-audio", "{folder}/harp.wav"), 2, "two queries write the stem 'harp'"),
])
def test_bad_queries_are_one_error_line(query_hub, song, tmp_path, args, code, message):
    (tmp_path / "harp.wav").write_bytes(song.read_bytes())
    args = [arg.format(song=song, folder=tmp_path) for arg in args]
    got, _, stderr = invoke(query_hub, song, *args, "-o", tmp_path / "out")
    assert got == code, stderr
    assert len(error_lines(stderr)) == 1 and message in error_lines(stderr)[0], stderr
    assert not (tmp_path / "out").exists()


def test_an_example_that_is_not_audio_fails_with_an_input_error(query_hub, song, tmp_path):
    (tmp_path / "notes.wav").write_text("not audio")
    code, _, stderr = invoke(query_hub, song, "--query-audio", tmp_path / "notes.wav", "-o", tmp_path / "out")
    assert code == 1 and len(error_lines(stderr)) == 1 and "notes.wav" in error_lines(stderr)[0], stderr


def test_the_api_takes_query_and_query_audio(query_hub, song, tmp_path, monkeypatch):
    import stemsplit

    for name, value in query_hub.items():
        monkeypatch.setenv(name, value) if value is not None else monkeypatch.delenv(name, raising=False)
    mix = tone(1.5, RATE).T
    separated = stemsplit.separate((mix, RATE), query=["flute"], query_audio=example(tmp_path, "bell.wav", 0.5))
    assert list(separated.stems) == ["flute", "no_flute", "bell", "no_bell"]
    for stem in ("flute", "bell"):
        assert np.abs(separated.stems[stem] + separated.stems[f"no_{stem}"] - mix).max() < 1e-5
    assert fake.TOWERS == {"text": 1, "audio": 1}


def test_query_names_become_stem_names():
    assert stem_name("  acoustic\tguitar ") == "acoustic guitar"
    assert stem_name("../a/b") == "_a_b"
    assert len(stem_name("x" * 300).encode()) == 100
    assert Queries.of(("harp", "harp"), ()).stems == ["harp"]
