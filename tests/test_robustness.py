"""Never lose work: odd and broken inputs, interruptions, a full disk, shards, pipes and concurrent downloads.

The real `stemsplit` command runs in a subprocess (exit codes, stderr lines, stdout bytes and the files left
behind are what is under test), with the tiny random-weight model of conftest's `tiny_repo`; checks that need
no signal, pipe or resource limit run it in this process with click's runner, to save the ~2 s start of each.
Bugs these tests found are described next to the tests that fail until they are fixed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import (command, environment, error_lines, files_under, interrupt_promptly, json_lines, leftovers,
                     stemsplit, tone, wait_for)
from hub_server import HubServer
from stemsplit.audio import find_ffmpeg

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["drums", "bass", "other", "vocals"]
INTERRUPTED = "error: interrupted; no partial stems were left"
TERMINATED = "error: terminated; no partial stems were left"


# Test media

def ffmpeg(*args: object) -> None:
    subprocess.run([find_ffmpeg()[0], "-nostdin", "-v", "fatal", "-y", *map(str, args)], check=True, timeout=300)


def decoded_frames(path: Path, work: Path) -> int:
    """Frames ffmpeg decodes from `path` (for mp3, whose length only a decoder knows)."""
    wav = work / f"{path.name}.decoded.wav"
    ffmpeg("-i", f"file:{path}", "-f", "wav", "-acodec", "pcm_f32le", f"file:{wav}")
    return sf.info(wav).frames


def check_stems(folder: Path, rate: int, frames: int, silent: bool = False, ext: str = "wav") -> None:
    """Four complete stems at `rate` with exactly `frames` frames, all finite (all zero for silence)."""
    stems = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".stemsplit.json"))  # the identity record
    assert stems == sorted(f"{s}.{ext}" for s in SOURCES), folder
    for stem in SOURCES:
        audio, stem_rate = sf.read(folder / f"{stem}.{ext}", dtype="float32", always_2d=True)
        assert (stem_rate, audio.shape) == (rate, (frames, 2)), (folder / stem, stem_rate, audio.shape)
        assert np.isfinite(audio).all()
        if silent:
            assert not audio.any(), f"{stem} of a silent input is not silent: peak {np.abs(audio).max()}"


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """Sources the corpus is cut from."""
    folder = tmp_path_factory.mktemp("media")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100:duration=3", "-ac", "2",
           "-c:a", "libmp3lame", "-b:a", "128k", folder / "full.mp3")
    return folder


# 1. The corpus: every input gets correct stems or exactly one error line naming it

NAN_COUNT = 5  # non-finite samples put in nan.wav


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media) -> tuple[Path, dict[str, dict]]:
    """A folder of bad and odd inputs, and what each should give: `{"status": "failed"}`, or
    `{"status": "done", "rate": R, "frames": N, "silent": bool}`."""
    folder = tmp_path_factory.mktemp("corpus")
    expected: dict[str, dict] = {}

    def done(name: str, rate: int, frames: int, silent: bool = False) -> None:
        expected[name] = {"status": "done", "rate": rate, "frames": frames, "silent": silent}

    (folder / "empty.mp3").write_bytes(b"")
    expected["empty.mp3"] = {"status": "failed"}

    full = (media / "full.mp3").read_bytes()
    (folder / "truncated.mp3").write_bytes(full[:int(0.3 * len(full))])
    done("truncated.mp3", 44100, decoded_frames(folder / "truncated.mp3", media))

    (folder / "random.mp3").write_bytes(np.random.default_rng(1).bytes(20000))
    expected["random.mp3"] = {"status": "failed"}

    (folder / "notes.wav").write_text("this is a text file, not a wav file\n")
    expected["notes.wav"] = {"status": "failed"}

    (folder / "x.wav").mkdir()
    expected["x.wav"] = {"status": "failed"}

    sf.write(folder / "blip.wav", tone(0.01, 48000), 48000)
    done("blip.wav", 48000, 480)

    sf.write(folder / "silence.flac", np.zeros((441000, 2), np.float32), 44100)
    done("silence.flac", 44100, 441000, silent=True)

    sf.write(folder / "mono8k.wav", tone(1.0, 8000, channels=1), 8000)
    done("mono8k.wav", 8000, 8000)

    sf.write(folder / "hires.wav", tone(0.5, 192000), 192000, subtype="PCM_24")
    done("hires.wav", 192000, 96000)

    sf.write(folder / "surround.wav", tone(0.5, 48000, channels=6), 48000)
    done("surround.wav", 48000, 24000)

    broken = tone(0.5, 44100)
    broken[[10, 2000, 9000], 0] = np.nan
    broken[500, 1], broken[700, 0] = np.inf, -np.inf
    assert np.count_nonzero(~np.isfinite(broken)) == NAN_COUNT
    sf.write(folder / "nan.wav", broken, 44100, subtype="FLOAT")
    done("nan.wav", 44100, 22050)

    (folder / "dir ü").mkdir()
    sf.write(folder / "dir ü" / "sóng 1.flac", tone(0.5, 44100), 44100)
    done("dir ü/sóng 1.flac", 44100, 22050)
    return folder, expected


@pytest.fixture(scope="module")
def corpus_run(corpus, tiny_repo, tmp_path_factory):
    """The whole corpus as ONE batch, with --json; run from the corpus folder with relative names so that
    messages and the summary name inputs as the user typed them."""
    folder, expected = corpus
    work = tmp_path_factory.mktemp("corpus-run")
    result = stemsplit(*expected, "-n", "tiny", "--repo", tiny_repo, "-o", work / "out", "--json",
                       cwd=folder, tmp=work / "tmp")
    return result, work


def test_corpus_batch_goes_on_and_fails_at_the_end(corpus, corpus_run):
    _, expected = corpus
    result, work = corpus_run
    failed = [name for name, e in expected.items() if e["status"] == "failed"]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{len(expected) - len(failed)} done, 0 skipped, {len(failed)} failed" in result.stderr
    assert len(error_lines(result.stderr)) == len(failed), result.stderr
    assert [line["input"] for line in json_lines(result.stdout)] == list(expected)
    assert leftovers(work / "out") == []
    assert list((work / "tmp").iterdir()) == [], "temporary decoding files were left behind"


@pytest.mark.parametrize("name", ["empty.mp3", "truncated.mp3", "random.mp3", "notes.wav", "x.wav", "blip.wav",
                                  "silence.flac", "mono8k.wav", "hires.wav", "surround.wav", "nan.wav",
                                  "dir ü/sóng 1.flac"])
def test_corpus_input(corpus, corpus_run, name):
    _, expected = corpus
    result, work = corpus_run
    want = expected[name]
    track = Path(name).stem
    errors = [line for line in error_lines(result.stderr) if name in line]
    lines = [line for line in json_lines(result.stdout) if line["input"] == name]
    assert len(lines) == 1, f"{name}: expected one JSON line, got {lines}\nstderr:\n{result.stderr}"
    [line] = lines
    assert set(line) == {"input", "status", "error", "outputs", "duration", "seconds"}
    assert line["status"] == want["status"], line
    assert isinstance(line["seconds"], float) and line["seconds"] >= 0
    summary_rows = [row for row in result.stderr.split("stemsplit summary")[-1].splitlines()
                    if re.search(rf"[│|]\s*{re.escape(name)}\s*[│|]", row)]
    assert len(summary_rows) == 1 and want["status"] in summary_rows[0], result.stderr
    if want["status"] == "failed":
        assert len(errors) == 1, f"{name}: expected one error line naming it:\n{result.stderr}"
        assert line["error"] and name in line["error"] and line["outputs"] == {}
        assert not (work / "out" / "tiny" / track).exists()
        return
    assert errors == [] and line["error"] is None
    folder = work / "out" / "tiny" / track
    check_stems(folder, want["rate"], want["frames"], want["silent"])
    assert line["outputs"] == {stem: str((folder / f"{stem}.wav").resolve()) for stem in SOURCES}
    assert line["duration"] == pytest.approx(want["frames"] / want["rate"])


def test_corpus_notices_are_shown(corpus_run):
    """README: inputs with more channels are downmixed "with a notice"; NaN/inf samples are replaced and said so.
    Notices are not errors."""
    result, _ = corpus_run
    notices = [line for line in result.stderr.splitlines() if not line.startswith("error:")]
    assert any("6-channel input downmixed to stereo" in line for line in notices), result.stderr
    assert any(f"replaced {NAN_COUNT} NaN/inf samples with 0" in line for line in notices), result.stderr


# A long input. Measured on the 2-core build box: the tiny model costs about 0.35 s of CPU per second of
# audio (every 0.75 s hop runs a 1 s segment at 44.1 kHz; 120 s of audio took 42 s of CPU, 60 s wall under
# load), so a 2-hour input takes about 45 min and even 30 min takes over 10 min: far beyond this file's
# budget. The full check is opt-in: STEMSPLIT_TEST_LONG=SECONDS (7200 for 2 hours). The 2-hour input is still
# decoded (and interrupted) below, which is cheap.

@pytest.mark.skipif(not os.environ.get("STEMSPLIT_TEST_LONG"),
                    reason="set STEMSPLIT_TEST_LONG=7200 to separate a 2-hour input (hours on a CPU)")
def test_long_input_gives_stems_of_the_exact_length(tmp_path, tiny_repo):
    seconds = int(os.environ["STEMSPLIT_TEST_LONG"])
    song = tmp_path / "long.flac"
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=8000:duration={seconds}", "-ac", "1",
           "-c:a", "flac", song)
    frames = sf.info(song).frames
    assert frames == seconds * 8000
    result = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path / "out", "--batch-size", "8",
                       "--format", "flac", "--bit-depth", "16", cwd=tmp_path, tmp=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    for stem in SOURCES:
        info = sf.info(tmp_path / "out" / "tiny" / "long" / f"{stem}.flac")
        assert (info.samplerate, info.frames, info.channels) == (8000, frames, 2)
    assert leftovers(tmp_path / "out") == [] and list((tmp_path / "tmp").iterdir()) == []


# 2. SIGINT and SIGTERM mid-song: nothing partial is left, finished songs are kept, a re-run redoes the rest

@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("songs")
    sf.write(folder / "done.wav", tone(0.5, 44100, seed=1), 44100)
    sf.write(folder / "long.flac", tone(4.0, 44100, seed=2), 44100)  # 6 segments: seconds to separate
    return folder


def interrupt_when_separating(args: list, track_folder: Path, signum: int, cwd: Path, tmp: Path):
    """Start the CLI, wait until it writes the stems of `track_folder` (its temporary files have data, so
    the song is being separated), send `signum`; the exit code, stdout and stderr."""
    process = subprocess.Popen(command(*args), cwd=cwd, env=environment(tmp), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)

    def separating() -> bool:
        partial = list(track_folder.glob(".*.partial*")) if track_folder.is_dir() else []
        try:
            return any(p.stat().st_size > 0 for p in partial)
        except FileNotFoundError:
            return False

    try:
        wait_for(separating, process, f"the separation of {track_folder.name}")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout.decode(), stderr.decode()


def test_sigint_mid_batch_keeps_finished_songs_and_a_rerun_redoes_only_the_rest(tmp_path, songs, tiny_repo):
    out = tmp_path / "out"
    args = [songs / "done.wav", songs / "long.flac", "-n", "tiny", "--repo", tiny_repo, "-o", out]
    code, _, stderr = interrupt_when_separating(args, out / "tiny" / "long", signal.SIGINT, tmp_path,
                                                tmp_path / "tmp")
    assert code == 130, stderr
    assert error_lines(stderr) == [INTERRUPTED], stderr
    assert "Traceback" not in stderr
    assert leftovers(out) == []
    assert files_under(out / "tiny" / "long") == []
    check_stems(out / "tiny" / "done", 44100, 22050)  # finished before the interrupt: kept
    assert list((tmp_path / "tmp").iterdir()) == []

    kept = {p: p.stat().st_mtime_ns for p in files_under(out / "tiny" / "done")}
    rerun = stemsplit(*args, "--skip-existing", "--json", cwd=tmp_path, tmp=tmp_path / "tmp")
    assert rerun.returncode == 0, rerun.stderr
    statuses = [(line["input"], line["status"]) for line in json_lines(rerun.stdout)]
    assert statuses == [(str(songs / "done.wav"), "skipped"), (str(songs / "long.flac"), "done")]
    assert {p: p.stat().st_mtime_ns for p in files_under(out / "tiny" / "done")} == kept
    check_stems(out / "tiny" / "long", 44100, 176400)
    assert leftovers(out) == []


def test_sigterm_mid_song_leaves_nothing(tmp_path, songs, tiny_repo):
    out = tmp_path / "out"
    args = [songs / "long.flac", "-n", "tiny", "--repo", tiny_repo, "-o", out, "--format", "flac"]
    code, stdout, stderr = interrupt_when_separating(args, out / "tiny" / "long", signal.SIGTERM, tmp_path,
                                                     tmp_path / "tmp")
    assert code == 143, stderr
    assert error_lines(stderr) == [TERMINATED], stderr
    assert "Traceback" not in stderr and stdout == ""
    assert files_under(out) == []
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.fixture(scope="module")
def two_hours(tmp_path_factory) -> Path:
    """A 2-hour input: 8 kHz mono digital silence in flac is small (0.7 MB) and quick to make, yet 2.5 GB
    once decoded to 44.1 kHz stereo float for the model."""
    song = tmp_path_factory.mktemp("two-hours") / "two hours.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "7200", "-c:a", "flac", song)
    return song


def test_sigint_while_decoding_a_long_input_leaves_no_temporary_files(tmp_path, tiny_repo, two_hours):
    """Ctrl-C while a 2-hour input is decoded removes the decoding folder and takes effect at once."""
    tmp = tmp_path / "tmp"
    process = subprocess.Popen(command(two_hours, "-n", "tiny", "--repo", tiny_repo, "-o", tmp_path / "out"),
                               cwd=tmp_path, env=environment(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def decoding() -> bool:
        try:
            return any(p.stat().st_size > 0 for p in tmp.glob("stemsplit-*/song.f32"))
        except FileNotFoundError:
            return False

    try:
        wait_for(decoding, process, "the decoding")
        stderr = interrupt_promptly(process, signal.SIGINT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert error_lines(stderr) == [INTERRUPTED]
    assert list(tmp.iterdir()) == [] and files_under(tmp_path / "out") == []


def test_sigint_while_the_next_input_is_decoded_ahead_exits_promptly(tmp_path, songs, tiny_repo, two_hours):
    """With -j 1 (the default) the next input is decoded in the background while the current one is
    separated. Ctrl-C then must not wait for that decoding to finish (about 20-60 s for 2 hours here: a
    service manager's SIGKILL would come first and leave gigabytes of temporary files)."""
    tmp, out = tmp_path / "tmp", tmp_path / "out"
    process = subprocess.Popen(command(songs / "long.flac", two_hours, "-n", "tiny", "--repo", tiny_repo,
                                       "-o", out), cwd=tmp_path, env=environment(tmp), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    folder = out / "tiny" / "long"
    try:
        wait_for(lambda: folder.is_dir() and list(folder.glob(".*.partial*")) and len(list(tmp.iterdir())) == 2,
                 process, "the separation of the first input and the decoding of the second")
        stderr = interrupt_promptly(process, signal.SIGINT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if process.returncode != 130:
            shutil.rmtree(tmp, ignore_errors=True)  # a killed run leaves up to 2.5 GB there
    assert process.returncode == 130, stderr
    assert error_lines(stderr) == [INTERRUPTED]
    assert list(tmp.iterdir()) == [] and files_under(out) == []


# 3. Disk full while writing: exit 4, one error line, nothing partial

def limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_while_writing_stems_is_an_output_error(tmp_path, tiny_repo):
    """RLIMIT_FSIZE a few bytes over 768 000: decoding 0.5 s of 192 kHz mono (384 KB of float) and keeping it
    as stereo float at its own rate (768 000 bytes, for the residuals) fit; the 32-bit stereo 192 kHz stem,
    the same samples after a WAV header, does not."""
    song = tmp_path / "hires mono.wav"
    sf.write(song, tone(0.5, 192000, channels=1), 192000)
    out = tmp_path / "out"
    result = stemsplit(song, "-n", "tiny", "--repo", tiny_repo, "-o", out, "--bit-depth", "32", "--stems", "vocals",
                       cwd=tmp_path, tmp=tmp_path / "tmp", preexec_fn=limit_file_size(768_020))
    assert result.returncode == 4, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: cannot write {out.resolve() / 'tiny' / 'hires mono' / 'vocals.wav'}: ")
    assert "Traceback" not in result.stderr
    assert files_under(out) == []
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.fixture(scope="module")
def can_mount_tmpfs(tmp_path_factory) -> None:
    point = tmp_path_factory.mktemp("mount-probe")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{point}'"],
                           capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (needs unshare and CAP_SYS_ADMIN)")


@pytest.mark.parametrize("size, where, stage", [
    ("500k", "out", "collecting the stems"),  # 4 raw float stems of 176 KB do not fit
    ("800k", "out", "encoding the stems"),  # they fit, the 132 KB 24-bit wav files after them do not
    ("100k", "tmp", "decoding the input"),  # the temporary folder cannot hold the decoded 176 KB
    ("100k", "tmp", "spooling stdin"),  # nor the 176 KB piped in
])
def test_full_disk_is_an_output_error_and_leaves_nothing(tmp_path, tiny_repo, can_mount_tmpfs, size, where, stage):
    """The output folder, or the temporary folder, is a small tmpfs mounted in a private mount namespace (so
    it vanishes with the command; what is left on it is listed before). The input is 0.5 s of 44.1 kHz stereo
    float. README: exit 4 is "output error: output folder not writable, disk full"."""
    song = tmp_path / "song.wav"
    sf.write(song, tone(0.5, 44100), 44100, subtype="FLOAT")
    out, tmp, listing = tmp_path / "out", tmp_path / "tmp", tmp_path / "listing.txt"
    out.mkdir()
    env = environment(tmp, LISTING=str(listing), OUT_FOLDER=str(out))
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; shift 3; "$@"; code=$?; '
              'find "$OUT_FOLDER" "$TMPDIR" -mindepth 1 > "$LISTING"; exit $code')
    piped = stage == "spooling stdin"
    args = ["unshare", "-m", "sh", "-c", script, "sh", size, out if where == "out" else tmp, "--",
            *command("-" if piped else song, "-n", "tiny", "--repo", tiny_repo, "-o", out)]
    result = subprocess.run(args, cwd=tmp_path, env=env, input=song.read_bytes() if piped else b"",
                            capture_output=True, timeout=600)
    stderr = result.stderr.decode()
    if result.returncode == 97:
        pytest.skip(f"mount failed: {stderr}")
    assert "Traceback" not in stderr, stderr
    assert result.returncode == 4, (stage, stderr)
    errors = error_lines(stderr)
    assert len(errors) == 1 and errors[0].endswith(": No space left on device"), (stage, stderr)
    if where == "out":
        assert errors[0].startswith(f"error: cannot write {out.resolve() / 'tiny' / 'song'}/")
    left = [line for line in listing.read_text().splitlines() if Path(line).suffix or ".partial" in line]
    assert left == [], f"left behind ({stage}): {left}"
    assert list(tmp.iterdir()) == []


# 4. --shard I/N partitions a folder; with --skip-existing a re-run does nothing

def test_shards_partition_the_inputs_and_a_rerun_skips_everything(tmp_path, fake_repo, in_process):
    folder = tmp_path / "album"
    folder.mkdir()
    for index in range(5):
        sf.write(folder / f"track {index}.wav", tone(0.2, 22050, seed=index), 22050)
    out = tmp_path / "out"
    inputs = sorted(str(p) for p in folder.iterdir())
    shards = []
    for index in range(2):
        result = in_process(folder, "-n", "tiny", "--repo", fake_repo, "-o", out, "--json", "--shard",
                            f"{index}/2", "--skip-existing", tmp=tmp_path / "tmp")
        assert result.returncode == 0, result.stderr
        lines = json_lines(result.stdout)
        assert {line["status"] for line in lines} == {"done"}
        shards.append([line["input"] for line in lines])
    assert shards == [inputs[0::2], inputs[1::2]]
    for name in inputs:
        check_stems(out / "tiny" / Path(name).stem, 22050, 4410)
    written = {p: p.stat().st_mtime_ns for p in files_under(out)}

    rerun = in_process(folder, "-n", "tiny", "--repo", fake_repo, "-o", out, "--json", "--skip-existing",
                       tmp=tmp_path / "tmp")
    assert rerun.returncode == 0, rerun.stderr
    assert [(line["input"], line["status"]) for line in json_lines(rerun.stdout)] == [(i, "skipped") for i in inputs]
    assert {p: p.stat().st_mtime_ns for p in files_under(out)} == written
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("spec", ["2/2", "5/2", "-1/2", "0/0", "1/0", "x/2", "1", "1/2/3", "", "0.5/2"])
def test_bad_shard_specs_are_usage_errors(tmp_path, fake_repo, in_process, spec):
    sf.write(tmp_path / "song.wav", tone(0.1, 44100), 44100)
    result = in_process(tmp_path / "song.wav", "-n", "tiny", "--repo", fake_repo, "-o", tmp_path / "out",
                        "--shard", spec, tmp=tmp_path / "tmp")
    assert result.returncode == 2, result.stderr
    assert "Invalid value for --shard" in result.stderr and "I/N" in result.stderr
    assert not (tmp_path / "out").exists()


# Two inputs with the same name in different folders

def test_inputs_with_the_same_name_do_not_overwrite_each_other(tmp_path, fake_repo, in_process):
    """`stemsplit cd1/ cd2/` where both hold "01.wav": each gets its own stems folder, named after its folder."""
    for disc, seed in (("cd1", 1), ("cd2", 2)):
        (tmp_path / disc).mkdir()
        sf.write(tmp_path / disc / "01.wav", tone(0.2, 44100, seed=seed), 44100)
    result = in_process(tmp_path / "cd1", tmp_path / "cd2", "-n", "tiny", "--repo", fake_repo, "-o",
                        tmp_path / "out", "--json", tmp=tmp_path / "tmp")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert [line["status"] for line in lines] == ["done", "done"]
    for line, disc in zip(lines, ("cd1", "cd2")):
        folder = tmp_path / "out" / "tiny" / f"01 ({disc})"
        assert line["outputs"] == {stem: str(folder / f"{stem}.wav") for stem in SOURCES}
        check_stems(folder, 44100, 8820)


# 5 and 6. --stdout writes one WAV stream and nothing else; stdin input works

def wav_stream(data: bytes) -> tuple[np.ndarray, int]:
    """A WAV file that is the whole of `data` (its RIFF size accounts for every byte)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:64]
    assert int.from_bytes(data[4:8], "little") + 8 == len(data), "stdout holds more than the WAV file"
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, rate


@pytest.fixture(scope="module")
def flac_song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flac") / "piped song.flac"
    sf.write(path, tone(0.6, 48000, seed=4), 48000)
    return path


def test_stdout_vocals_is_only_a_wav_stream(tmp_path, flac_song, tiny_repo):
    result = stemsplit(flac_song, "-n", "tiny", "--repo", tiny_repo, "--stdout", "vocals", cwd=tmp_path,
                       tmp=tmp_path / "tmp", binary=True)
    assert result.returncode == 0, result.stderr
    audio, rate = wav_stream(result.stdout)
    assert rate == 48000 and audio.shape == (28800, 2) and np.isfinite(audio).all() and audio.any()
    assert list(tmp_path.iterdir()) == [tmp_path / "tmp"] and list((tmp_path / "tmp").iterdir()) == []


def test_stdout_no_vocals_from_stdin(tmp_path, flac_song, tiny_repo):
    result = stemsplit("-", "-n", "tiny", "--repo", tiny_repo, "--stdout", "no_vocals", cwd=tmp_path,
                       tmp=tmp_path / "tmp", stdin=flac_song.read_bytes(), binary=True)
    assert result.returncode == 0, result.stderr
    audio, rate = wav_stream(result.stdout)
    assert rate == 48000 and audio.shape == (28800, 2) and np.isfinite(audio).all() and audio.any()
    assert list(tmp_path.iterdir()) == [tmp_path / "tmp"] and list((tmp_path / "tmp").iterdir()) == []


def test_stdin_input_is_separated_into_files(tmp_path, flac_song, fake_repo, in_process):
    """(A real pipe into a subprocess is tested just above.)"""
    result = in_process("-", "-n", "tiny", "--repo", fake_repo, "-o", tmp_path / "out", tmp=tmp_path / "tmp",
                        stdin=flac_song.read_bytes())
    assert result.returncode == 0, result.stderr
    check_stems(tmp_path / "out" / "tiny" / "stdin", 48000, 28800)
    assert list((tmp_path / "tmp").iterdir()) == []


# 7. Two processes downloading the same model at once

REPO_ID, COMMIT, SIGNATURE = "tester/Concurrent", "fedcba9876543210fedcba9876543210fedcba98", "0tiny000"

DOWNLOAD = """
import json, sys, time
from pathlib import Path
import stemsplit.packages  # torch: imported before the start signal, so that both ask the Hub at once
from stemsplit.catalogue import find_model, read_catalogue
from stemsplit.registry import download_bag
catalogue, ready, go = map(Path, sys.argv[1:4])
info = find_model("tiny", read_catalogue(catalogue))
ready.touch()
while not go.exists():
    time.sleep(0.005)
start = time.time()
bag = download_bag(info)
print(json.dumps({"start": start, "end": time.time(), "sources": bag.stems}))
"""


class SlowHub(HubServer):
    """The loopback Hub, sending file bodies slowly (in `seconds`), so that downloads surely overlap."""

    def __init__(self, seconds: float) -> None:
        super().__init__()

        class Handler(self._server.RequestHandlerClass):
            def send_body(self, body: bytes) -> None:
                pieces = 20
                for index in range(pieces):
                    self.wfile.write(body[index * len(body) // pieces:(index + 1) * len(body) // pieces])
                    self.wfile.flush()
                    time.sleep(seconds / pieces)

        self._server.RequestHandlerClass = Handler


def test_two_processes_downloading_the_same_model_share_one_valid_file(tmp_path, tiny_repo):
    weights = (tiny_repo / f"{SIGNATURE}.safetensors").read_bytes()
    sha256 = hashlib.sha256(weights).hexdigest()
    catalogue = tmp_path / "catalogue.toml"
    catalogue.write_text(f"""default = "tiny"

[tiny]
family = "htdemucs"
description = "the tiny test model"
licence = "MIT"
stems = {json.dumps(SOURCES)}
repo = "{REPO_ID}"
revision = "{COMMIT}"

[[tiny.files]]
name = "{SIGNATURE}.safetensors"
sha256 = "{sha256}"
legacy = "{SIGNATURE}-{sha256[:8]}.th"
legacy_sha256 = "{sha256}"
shares = [1.0, 1.0, 1.0, 1.0]
""")
    home = tmp_path / "hf-home"
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "XDG_CACHE_HOME", "HF_HUB_ENABLE_HF_TRANSFER")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with SlowHub(seconds=1.5) as hub:
        hub.add(REPO_ID, COMMIT, f"{SIGNATURE}.safetensors", weights)
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home))
        go = tmp_path / "go"
        processes = [subprocess.Popen([sys.executable, "-c", DOWNLOAD, str(catalogue), str(tmp_path / f"ready{i}"),
                                       str(go)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for i in range(2)]
        try:
            for i, process in enumerate(processes):
                ready = tmp_path / f"ready{i}"
                wait_for(ready.exists, process, f"downloader {i} to start", 120)
            go.touch()
            outputs = [process.communicate(timeout=120) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        reports = []
        for process, (stdout, stderr) in zip(processes, outputs):
            assert process.returncode == 0, stderr
            reports.append(json.loads(stdout))
            assert reports[-1]["sources"] == SOURCES
        first, second = reports
        assert first["start"] < second["end"] and second["start"] < first["end"], "the downloads did not overlap"
        resolve = f"/{REPO_ID}/resolve/{COMMIT}/{SIGNATURE}.safetensors"
        assert [method for method, path in hub.requests if path == resolve].count("HEAD") >= 2, hub.requests
        assert ("GET", resolve) in hub.requests

    model = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    files = [p for p in model.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert not [p for p in files if p.name.endswith(".incomplete")], files
    blobs = [p for p in files if p.parent.name == "blobs"]
    assert len(blobs) == 1, files
    assert hashlib.sha256(blobs[0].read_bytes()).hexdigest() == sha256
    snapshot = model / "snapshots" / COMMIT / f"{SIGNATURE}.safetensors"
    assert snapshot.resolve() == blobs[0].resolve()
