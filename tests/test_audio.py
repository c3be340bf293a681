from __future__ import annotations

import errno
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import ffmpeg
import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import load_audio, read, sdr, write_stems
from stemsplit import audio
from stemsplit.audio import (FORMATS, AudioInfo, Encoding, find_ffmpeg, open_song, open_stem_writers, resample,
                             resample_blocks)
from stemsplit.errors import FfmpegError, InputError, OutputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_TRACKS = sorted(SHARED.glob("audio/*/mixture.flac"))
FFMPEG = find_ffmpeg()[0]
ENCODERS = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
FFMPEG_VERSION = audio._ffmpeg_version(FFMPEG)


def needs_encoder(name: str):
    return pytest.mark.skipif(f" {name} " not in ENCODERS, reason=f"this ffmpeg has no {name} encoder")


# stemsplit passes over an ffmpeg older than this for a newer one; one forced on it (STEMSPLIT_FFMPEG, as .ci/run's
# second pass does with Debian's) must still give AAC the wrong length, or the version rule is out of date.
inexact_aac_on_old_ffmpeg = pytest.mark.xfail(
    audio._version_number(FFMPEG_VERSION) < audio.EXACT_AAC_FFMPEG, strict=True,
    reason=f"ffmpeg {FFMPEG_VERSION} is older than {'.'.join(map(str, audio.EXACT_AAC_FFMPEG))}: inexact AAC lengths")


def tones(rate: int, frames: int, freqs=(220.0, 1234.5, 5000.0), channels: int = 2) -> np.ndarray:
    """A float32 `(channels, frames)` sum of sines, different per channel, peak below 0.8."""
    t = np.arange(frames) / rate
    rows = [sum(np.sin(2 * np.pi * f * (1 + 0.01 * c) * t + c) for f in freqs) for c in range(channels)]
    return (0.25 * np.array(rows)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    sf.write(path, samples.T, rate, subtype=subtype)
    return path


def convert(src: Path, dst: Path, **options) -> Path:
    ffmpeg.input(str(src)).output(str(dst), **options).global_args("-v", "error").overwrite_output().run(
        cmd=FFMPEG, quiet=True)
    return dst


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# ffmpeg


def ffmpeg_on_path(monkeypatch, folder: Path, version_line: str | None) -> None:
    """PATH holding only `folder`, with an `ffmpeg` there: the bundled binary, or (`version_line`) a script that
    answers -version like an older release."""
    folder.mkdir()
    if version_line is None:
        (folder / "ffmpeg").symlink_to(audio._bundled_ffmpeg()[0])
    else:
        (folder / "ffmpeg").write_text(f"#!/bin/sh\necho '{version_line}'\n")
        (folder / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv(audio.FFMPEG_VARIABLE, raising=False)
    find_ffmpeg.cache_clear()


@pytest.fixture
def clean_ffmpeg_choice():
    find_ffmpeg.cache_clear()
    yield
    find_ffmpeg.cache_clear()


def test_ffmpeg_choice_prefers_a_recent_system_binary(monkeypatch, tmp_path, clean_ffmpeg_choice):
    ffmpeg_on_path(monkeypatch, tmp_path / "new", None)
    path, origin = find_ffmpeg()
    assert path == str(tmp_path / "new" / "ffmpeg") and re.fullmatch(r"system ffmpeg n?9\.\S+ on PATH", origin)
    assert find_ffmpeg() is find_ffmpeg()  # cached


def test_ffmpeg_older_than_exact_aac_gives_way_to_the_bundled_one(monkeypatch, tmp_path, clean_ffmpeg_choice):
    ffmpeg_on_path(monkeypatch, tmp_path / "old", "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026")
    path, origin = find_ffmpeg()
    assert path == audio._bundled_ffmpeg()[0]
    assert re.fullmatch(r"ffmpeg \S+ bundled with imageio-ffmpeg \S+, as the system's ffmpeg 5.1.9-0\+deb12u1 "
                        r"is older than 9.0 \(inexact AAC lengths\)", origin), origin


def test_ffmpeg_named_in_the_environment_is_used_whatever_its_version(monkeypatch, tmp_path, clean_ffmpeg_choice):
    ffmpeg_on_path(monkeypatch, tmp_path / "old", "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026")
    monkeypatch.setenv(audio.FFMPEG_VARIABLE, str(tmp_path / "old" / "ffmpeg"))
    assert find_ffmpeg() == (str(tmp_path / "old" / "ffmpeg"), "ffmpeg 5.1.9-0+deb12u1 from STEMSPLIT_FFMPEG")
    monkeypatch.setenv(audio.FFMPEG_VARIABLE, str(tmp_path / "nothing"))
    find_ffmpeg.cache_clear()
    with pytest.raises(FfmpegError, match=f"^STEMSPLIT_FFMPEG={tmp_path / 'nothing'} is not an executable file$"):
        find_ffmpeg()


def test_without_a_system_ffmpeg_the_bundled_one_is_used(monkeypatch, tmp_path, clean_ffmpeg_choice):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv(audio.FFMPEG_VARIABLE, raising=False)
    path, origin = find_ffmpeg()
    assert path == audio._bundled_ffmpeg()[0] and re.fullmatch(r"ffmpeg \S+ bundled with imageio-ffmpeg \S+", origin)


# resampling


@pytest.mark.parametrize("old, new, freq", [
    (44100, 48000, 1000.0), (44100, 48000, 19000.0), (48000, 44100, 15000.0), (8000, 44100, 3000.0),
    (192000, 44100, 17000.0), (22050, 44100, 10000.0), (44100, 8000, 3500.0), (44100, 96000, 20000.0),
])
def test_resampled_sine_keeps_frequency_and_amplitude(old, new, freq):
    x = torch.from_numpy(np.sin(2 * np.pi * freq * np.arange(old) / old)).float()
    y = resample(x, old, new)
    expected = np.sin(2 * np.pi * freq * np.arange(new) / new)
    assert y.shape == (new,) and y.dtype == torch.float32
    middle = slice(new // 10, -new // 10)
    assert np.abs(y.numpy()[middle] - expected[middle]).max() < 1e-3


def test_round_trip_of_band_limited_noise_is_transparent():
    rng = np.random.default_rng(0)
    spectrum = np.fft.rfft(rng.standard_normal((2, 96000)))
    spectrum[:, np.fft.rfftfreq(96000, 1 / 48000) > 18000] = 0
    x = torch.from_numpy(np.fft.irfft(spectrum, 96000)).float()
    back = resample(resample(x, 48000, 44100), 44100, 48000)
    assert back.shape == x.shape
    away = slice(4800, -4800)
    assert sdr(back[:, away], x[:, away]) > 80


def test_resampling_removes_content_above_the_new_nyquist():
    x = torch.from_numpy(np.sin(2 * np.pi * 30000 * np.arange(192000) / 192000)).float()
    y = resample(x, 192000, 44100)[4410:-4410]
    assert y.abs().max() < 1e-4


def test_resample_length_is_ceil_and_leading_axes_are_kept():
    x = torch.randn(3, 2, 1001)
    y = resample(x, 48000, 44100)
    assert y.shape == (3, 2, math.ceil(1001 * 44100 / 48000))
    assert torch.allclose(y[1, 0], resample(x[1, 0], 48000, 44100), atol=1e-6)
    assert resample(x, 44100, 44100) is x
    assert resample(torch.ones(1), 8000, 44100).shape == (6,)


@pytest.mark.parametrize("old, new", [(8000, 44100), (48000, 44100), (44100, 48000), (192000, 44100), (22050, 44100),
                                      (96000, 48000), (44100, 44100)])
@pytest.mark.parametrize("seconds", [0.1, 0.001])
def test_resampling_in_blocks_gives_the_whole_signal_resampling(old, new, seconds):
    rng = np.random.default_rng(old + new)
    x = rng.uniform(-1, 1, (2, int(seconds * old) | 1)).astype(np.float32)
    cuts = sorted({1, 2, *rng.integers(3, x.shape[1], 10)})  # uneven blocks, one-sample ones included
    pieces = list(resample_blocks(np.split(x, cuts, axis=1), old, new))
    expected = resample(torch.from_numpy(x), old, new).numpy()
    assert all(piece.dtype == np.float32 for piece in pieces)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), expected, atol=1e-6, rtol=0)


# loading


@pytest.mark.parametrize("rate", [44100, 48000])
def test_open_song_reads_zero_padded_windows_of_the_resampled_song(tmp_path, monkeypatch, rate):
    from stemsplit import separation

    monkeypatch.setattr(audio, "BLOCK_FRAMES", 4099)  # prepared in many blocks
    source = np.random.default_rng(rate).uniform(-0.8, 0.9, (2, 50001)).astype(np.float32)
    expected = resample(torch.from_numpy(source), rate, 44100).numpy()
    padded = np.pad(expected, [(0, 0), (3000, 12000)])
    with open_song(write_wav(tmp_path / "in.wav", source, rate)) as song:
        assert song.info == AudioInfo(rate, 2, 50001, {}, ())
        assert song.length == expected.shape[1]
        for start in range(-3000, song.length + 1000, 7000):  # overlapping, off both ends
            window = song.read(start, 10000)
            assert window.dtype == np.float32 and window.shape == (2, 10000)
            np.testing.assert_allclose(window, padded[:, start + 3000:start + 13000], atol=1e-6, rtol=0)
        mono = expected.astype(np.float64).mean(axis=0)
        monkeypatch.setattr(separation, "MOMENTS_BLOCK", 4099)  # measured over many windows
        normalisation = separation.Normalisation.of(song)
        assert normalisation.mean == pytest.approx(mono.mean(), rel=1e-6) and abs(normalisation.mean) > 0.01
        assert normalisation.std == pytest.approx(mono.std(ddof=1), rel=1e-6)
        stored = Path(song.file.name)
    assert not stored.exists() and not stored.parent.exists()


def test_float_wav_loads_and_writes_back_bit_exactly(tmp_path):
    source = np.random.default_rng(1).uniform(-0.9, 0.9, (2, 12345)).astype(np.float32)
    mix, info = load_audio(write_wav(tmp_path / "in.wav", source, 44100))
    assert mix.dtype == np.float32 and mix.flags.c_contiguous
    np.testing.assert_array_equal(mix, source)
    assert info == AudioInfo(44100, 2, 12345, {}, ())
    out = tmp_path / "out" / "vocals.wav"
    write_stems({out: mix}, Encoding(info.sample_rate, format="wav", bit_depth=32, clip_mode="none"),
                frames=info.frames)
    written, rate = read(out)
    assert rate == 44100 and sf.info(out).subtype == "FLOAT"
    np.testing.assert_array_equal(written, source)


@pytest.mark.parametrize("format", ["wav", "flac"])
@pytest.mark.parametrize("bits", [16, 24])
def test_integer_pcm_round_trips_bit_exactly(tmp_path, format, bits):
    scale = 2 ** (bits - 1)
    ints = np.random.default_rng(bits).integers(-scale, scale, (2, 5000))
    ints[:, :2] = [[-scale, scale - 1], [scale - 1, -scale]]  # both extremes survive
    source = tmp_path / f"in.{format}"
    sf.write(source, (ints.T << (32 - bits)).astype(np.int32), 44100, subtype=f"PCM_{bits}")
    mix, info = load_audio(source)
    np.testing.assert_array_equal(mix, ints / scale)
    out = tmp_path / f"out.{format}"
    write_stems({out: mix}, Encoding(44100, format=format, bit_depth=bits, clip_mode="none"), frames=info.frames)
    written, _ = read(out, dtype="int32")
    assert sf.info(out).subtype == f"PCM_{bits}"
    np.testing.assert_array_equal(written >> (32 - bits), ints)


def test_mono_is_duplicated_exactly(tmp_path):
    ints = np.random.default_rng(2).integers(-32768, 32768, 3000).astype(np.int16)
    path = tmp_path / "mono.wav"
    sf.write(path, ints, 22050)
    mix, info = load_audio(path, sample_rate=22050)
    assert (info.channels, info.frames, info.sample_rate, info.notices) == (1, 3000, 22050, ())
    np.testing.assert_array_equal(mix[0], ints / 32768)
    np.testing.assert_array_equal(mix[1], ints / 32768)
    single, _ = load_audio(path, sample_rate=22050, channels=1)
    np.testing.assert_array_equal(single, mix[:1])


def test_six_channels_are_downmixed_to_stereo_with_a_notice(tmp_path):
    impulses = np.zeros((6, 600), np.float32)
    for channel in range(6):  # 5.1 order: FL FR FC LFE BL BR, one impulse each, 100 samples apart
        impulses[channel, 100 * channel] = 0.5
    mix, info = load_audio(write_wav(tmp_path / "surround.wav", impulses, 44100))
    assert info.channels == 6 and mix.shape == (2, 600)
    assert info.notices == ("6-channel input downmixed to stereo",)
    gains = mix[:, ::100] / 0.5
    np.testing.assert_allclose(gains[:, 0], [1, 0], atol=1e-6)  # front left stays left
    np.testing.assert_allclose(gains[:, 1], [0, 1], atol=1e-6)
    assert gains[0, 2] == gains[1, 2] > 0.5  # centre goes to both sides equally


def test_non_finite_samples_become_zero_with_a_notice(tmp_path):
    source = tones(44100, 1000)
    damaged = source.copy()
    damaged[0, 10], damaged[1, 20], damaged[1, 30] = np.nan, np.inf, -np.inf
    mix, info = load_audio(write_wav(tmp_path / "nan.wav", damaged, 44100))
    assert info.notices == ("replaced 3 NaN/inf samples with 0",)
    assert np.isfinite(mix).all() and mix[0, 10] == mix[1, 20] == mix[1, 30] == 0
    intact = np.isfinite(damaged)
    np.testing.assert_array_equal(mix[intact], source[intact])


def test_stdin_is_read_like_a_file(tmp_path, monkeypatch):
    path = convert(write_wav(tmp_path / "song.wav", tones(44100, 4000), 44100), tmp_path / "song.flac")
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(path.read_bytes())))
    mix, info = load_audio("-")
    expected, expected_info = load_audio(path)
    np.testing.assert_array_equal(mix, expected)
    assert info == expected_info and info.frames == 4000


def test_tags_are_read_from_the_file_and_the_audio_stream(tmp_path):
    wav = write_wav(tmp_path / "song.wav", tones(44100, 2000), 44100)
    tagged = convert(wav, tmp_path / "song.flac", **{"metadata:g:0": "title=A=b;c\\d #1",
                                                     "metadata:g:1": "artist=Motörhead"})
    assert load_audio(tagged)[1].tags == {"title": "A=b;c\\d #1", "artist": "Motörhead"}
    stream_tagged = convert(wav, tmp_path / "song.mka", acodec="flac", **{"metadata:s:a:0": "album=Stream"})
    assert load_audio(stream_tagged)[1].tags == {"album": "Stream"}


@pytest.mark.parametrize("rate, subtype, frames", [(8000, "PCM_16", 8001), (48000, "FLOAT", 48000 + 17),
                                                   (192000, "PCM_24", 96003), (48000, "FLOAT", 480)])
def test_other_rates_come_back_at_their_own_rate_and_length(tmp_path, rate, subtype, frames):
    source = tones(rate, frames, freqs=(110.0, 440.0, min(3000.0, rate / 4)))
    mix, info = load_audio(write_wav(tmp_path / "in.wav", source, rate, subtype))
    assert (info.sample_rate, info.frames) == (rate, frames)
    assert mix.shape == (2, math.ceil(frames * 44100 / rate))
    out = tmp_path / "stems" / "bass.wav"
    write_stems({out: mix}, Encoding(rate, format="wav", bit_depth=32, clip_mode="none"), frames=frames,
                source_rate=44100)
    written, written_rate = read(out)
    assert written_rate == rate and written.shape == (2, frames)
    original, _ = read(tmp_path / "in.wav")
    away = slice(frames // 10, -frames // 10)
    assert sdr(written[:, away], original[:, away]) > (45 if subtype == "PCM_16" else 60)


@pytest.mark.parametrize("track", SHARED_TRACKS or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"no real clips: {SHARED / 'audio'} (../shared/audio) is absent or holds no */mixture.flac"))],
    ids=lambda p: p.parent.name if p else "no-shared-clips")
def test_shared_mp3_decodes_to_the_flac_length_and_aligned(track):
    flac, flac_info = load_audio(track)
    mp3, mp3_info = load_audio(track.with_suffix(".mp3"))
    assert mp3_info.frames == flac_info.frames == sf.info(track).frames
    assert mp3.shape == flac.shape
    assert correlation(mp3, flac) > 0.995  # aligned: shifted by one sample it is about 0.98


@pytest.mark.parametrize("suffix, options", [
    pytest.param(".mp3", {"acodec": "libmp3lame", "audio_bitrate": "192k"}, marks=needs_encoder("libmp3lame")),
    pytest.param(".m4a", {"acodec": "aac", "audio_bitrate": "192k"}, marks=[needs_encoder("aac"),
                                                                            inexact_aac_on_old_ffmpeg]),
    pytest.param(".ogg", {"acodec": "libvorbis"}, marks=needs_encoder("libvorbis")),
    pytest.param(".opus", {"acodec": "libopus"}, marks=needs_encoder("libopus")),
])
def test_lossy_inputs_keep_their_exact_length(tmp_path, suffix, options):
    # Over one Ogg page long: ffmpeg gets the length of a single-page Vorbis stream wrong.
    source = tones(48000, 100003)
    encoded = convert(write_wav(tmp_path / "in.wav", source, 48000), tmp_path / f"in{suffix}", **options)
    mix, info = load_audio(encoded, sample_rate=48000)
    assert (info.sample_rate, info.frames) == (48000, 100003)
    assert correlation(mix, source) > 0.99


def test_video_file_uses_its_first_audio_stream(tmp_path):
    source = tones(44100, 44100)
    wav = write_wav(tmp_path / "in.wav", source, 44100)
    video = ffmpeg.input("testsrc=duration=1:size=32x32:rate=5", f="lavfi")
    muxed = ffmpeg.output(video, ffmpeg.input(str(wav)), str(tmp_path / "clip.mkv"), vcodec="mpeg4", acodec="flac")
    muxed.global_args("-v", "error").run(cmd=FFMPEG, quiet=True)
    mix, info = load_audio(tmp_path / "clip.mkv")
    assert info.frames == 44100
    np.testing.assert_allclose(mix, source, atol=2 ** -23)  # flac stores the float wav at 24 bits
    convert(tmp_path / "clip.mkv", tmp_path / "silent.mkv", vcodec="copy", an=None)
    with pytest.raises(InputError, match=r"silent\.mkv has no audio stream$"):
        load_audio(tmp_path / "silent.mkv")


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "random.mp3").write_bytes(np.random.default_rng(3).bytes(40000))
    (folder / "notes.txt").write_text("not audio\n" * 50)
    (folder / "folder.wav").mkdir()
    write_wav(folder / "silence.wav", np.zeros((2, 0), np.float32), 44100)
    return {
        "missing": (folder / "missing.wav", "missing.wav: no such file"),
        "directory": (folder / "folder.wav", "folder.wav is a directory, not an audio file"),
        "empty": (folder / "empty.mp3", "^cannot decode .*empty.mp3: "),  # the reason is ffmpeg's words
        "random bytes": (folder / "random.mp3", "cannot decode .*random.mp3: "),
        "text": (folder / "notes.txt", "(cannot decode .*notes.txt: |notes.txt has no audio stream$)"),
        "no samples": (folder / "silence.wav", "silence.wav contains no audio samples"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "random bytes", "text", "no samples"])
def test_bad_inputs_raise_one_line_input_errors(tmp_path, case):
    path, message = bad_inputs(tmp_path)[case]
    with pytest.raises(InputError, match=message) as caught:
        load_audio(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_empty_stdin_is_an_input_error(monkeypatch):
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"")))
    with pytest.raises(InputError, match="^cannot decode stdin: "):
        load_audio("-")


# writing


def stems_for(frames: int) -> dict[str, np.ndarray]:
    pitches = {"vocals": 440.0, "drums": 880.0, "bass": 110.0}
    return {name: tones(44100, frames, freqs=(pitch,)) for name, pitch in pitches.items()}


def test_stems_are_written_in_place_with_no_leftovers(tmp_path):
    out = tmp_path / "separated" / "model" / "song"
    stems = stems_for(2205)
    write_stems({out / f"{name}.flac": x for name, x in stems.items()},
                Encoding(44100, format="flac", bit_depth=24, clip_mode="rescale"), frames=2205)
    assert sorted(p.name for p in out.iterdir()) == ["bass.flac", "drums.flac", "vocals.flac"]
    for name, x in stems.items():
        written, rate = read(out / f"{name}.flac")
        assert rate == 44100 and sf.info(out / f"{name}.flac").subtype == "PCM_24"
        np.testing.assert_allclose(written, x, atol=2 ** -23)  # 0.25-peak tones are not rescaled


def test_a_failing_stem_leaves_nothing_behind(tmp_path):
    out = tmp_path / "song"
    out.mkdir()
    (out / "drums.wav").write_bytes(b"previous run")
    outputs = {out / "vocals.wav": tones(44100, 500), out / "drums.wav": np.zeros(500, np.float32)}
    with pytest.raises(ValueError, match="channels, samples"):
        write_stems(outputs, Encoding(44100), frames=500)
    assert [p.name for p in out.iterdir()] == ["drums.wav"]
    assert (out / "drums.wav").read_bytes() == b"previous run"


def test_an_interrupt_mid_way_leaves_nothing_behind(tmp_path, monkeypatch):
    real_encode, written = audio._encode, []

    def encode_then_interrupt(samples, temporary, *args):
        real_encode(samples, temporary, *args)
        written.append(temporary)
        if len(written) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(audio, "_encode", encode_then_interrupt)
    out = tmp_path / "song"
    with pytest.raises(KeyboardInterrupt):
        write_stems({out / f"{name}.wav": x for name, x in stems_for(500).items()}, Encoding(44100), frames=500)
    assert len(written) == 2 and all(p.name.startswith(".") and ".partial-" in p.name for p in written)
    assert not out.exists()  # nor the folder made for them


def test_unwritable_folder_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    target = tmp_path / "file" / "out" / "vocals.wav"
    with pytest.raises(OutputError, match=f"^cannot write to {tmp_path / 'file' / 'out'}: ") as caught:
        write_stems({target: tones(44100, 100)}, Encoding(44100), frames=100)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_output_that_is_a_folder_is_an_output_error(tmp_path):
    (tmp_path / "vocals.wav").mkdir()
    with pytest.raises(OutputError, match="^cannot write .*vocals.wav: "):
        write_stems({tmp_path / "bass.wav": tones(44100, 100), tmp_path / "vocals.wav": tones(44100, 100)},
                    Encoding(44100), frames=100)
    assert not any(".partial-" in p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("format, rate, bits, error, message", [
    ("flac", 44100, 32, OutputError, "flac supports bit depths 16, 24, not 32"),
    ("aiff", 44100, 16, OutputError, "unknown output format 'aiff'"),
    ("mp3", 96000, 16, InputError, "mp3 cannot store 96000 Hz audio"),
    ("m4a", 192000, 16, InputError, "m4a cannot store 192000 Hz audio"),
    ("ogg", 384000, 16, InputError, "ogg cannot store 384000 Hz audio"),
])
def test_impossible_outputs_are_refused_before_writing(tmp_path, format, rate, bits, error, message):
    with pytest.raises(error, match=f"^{message}; use wav or flac$" if error is InputError else message):
        write_stems({tmp_path / "out" / f"a.{format}": tones(44100, 100)},
                    Encoding(rate, format=format, bit_depth=bits), frames=100)
    assert not (tmp_path / "out").exists()


def test_output_is_padded_or_trimmed_to_the_requested_frames(tmp_path):
    x = tones(44100, 1000)
    write_stems({tmp_path / "long.wav": x, tmp_path / "short.wav": x[:, :900]},
                Encoding(44100, bit_depth=32, clip_mode="none"), frames=950)
    long, _ = read(tmp_path / "long.wav")
    short, _ = read(tmp_path / "short.wav")
    np.testing.assert_array_equal(long, x[:, :950])
    np.testing.assert_array_equal(short[:, :900], x[:, :900])
    assert short.shape == (2, 950) and not short[:, 900:].any()


@pytest.mark.parametrize("mode, bits, peak", [("rescale", 32, 1 / 1.01), ("clamp", 32, 0.99), ("none", 32, 2.0),
                                              ("none", 16, 32767 / 32768), ("rescale", 16, 1 / 1.01)])
def test_clip_modes_follow_the_reference(tmp_path, mode, bits, peak):
    x = tones(44100, 1000)
    loud = 2.0 * x / np.abs(x).max()
    write_stems({tmp_path / "loud.wav": loud}, Encoding(44100, bit_depth=bits, clip_mode=mode), frames=1000)
    written, _ = read(tmp_path / "loud.wav")
    assert np.abs(written).max() == pytest.approx(peak, abs=2 ** -15)
    if mode == "rescale":
        np.testing.assert_allclose(written, loud / 2.02, atol=2 ** -15)


def test_rescale_leaves_quiet_stems_untouched(tmp_path):
    x = tones(44100, 1000)
    write_stems({tmp_path / "quiet.wav": x}, Encoding(44100, bit_depth=32, clip_mode="rescale"), frames=1000)
    np.testing.assert_array_equal(read(tmp_path / "quiet.wav")[0], x)


@pytest.mark.parametrize("format, rate", [
    pytest.param("mp3", 44100, marks=needs_encoder("libmp3lame")),
    pytest.param("mp3", 48000, marks=needs_encoder("libmp3lame")),
    pytest.param("ogg", 32000, marks=needs_encoder("libvorbis")),
    pytest.param("m4a", 48000, marks=[needs_encoder("aac"), inexact_aac_on_old_ffmpeg]),
])
def test_lossy_stems_have_the_input_rate_and_exact_length(tmp_path, format, rate):
    frames = 2 * rate + 333  # over one Ogg page, see test_lossy_inputs_keep_their_exact_length
    model_rate_audio = tones(44100, math.ceil(frames * 44100 / rate))
    out = tmp_path / f"vocals.{format}"
    write_stems({out: model_rate_audio}, Encoding(rate, format=format, bit_depth=24), frames=frames)
    decoded, info = load_audio(out, sample_rate=rate)
    assert (info.sample_rate, info.frames) == (rate, frames)
    assert correlation(decoded, tones(rate, frames)) > 0.99
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


@pytest.mark.parametrize("format", [pytest.param(name, marks=inexact_aac_on_old_ffmpeg) if name == "m4a" else name
                                    for name in FORMATS])
def test_formats_constant_matches_what_writing_accepts(tmp_path, format):
    for bits in FORMATS[format] or (16,):
        write_stems({tmp_path / f"{bits}.{format}": tones(44100, 88200)},
                    Encoding(44100, format=format, bit_depth=bits), frames=88200)
        assert load_audio(tmp_path / f"{bits}.{format}")[1].frames == 88200



def write_in_blocks(paths: list[Path], stems: list[np.ndarray], encoding: Encoding, frames: int) -> None:
    cuts = [0, 1, 1000, 1001, 17000, stems[0].shape[1]]  # uneven, consecutive blocks
    with open_stem_writers(dict.fromkeys(paths, encoding), frames=frames) as writers:
        for start, end in zip(cuts, cuts[1:]):
            writers.write([stem[:, start:end] for stem in stems])


def loud_and_quiet(frames: int) -> list[np.ndarray]:
    x = tones(44100, frames)
    return [2.0 * x / np.abs(x).max(), np.random.default_rng(4).uniform(-0.5, 0.5, (2, frames)).astype(np.float32)]


def test_stems_written_in_blocks_are_the_whole_stems_resampled_and_clipped(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "BLOCK_FRAMES", 5003)  # finished in many blocks
    stems = loud_and_quiet(30011)
    frames = math.ceil(30011 * 48000 / 44100) - 3
    paths = [tmp_path / "out" / "loud.wav", tmp_path / "out" / "quiet.wav"]
    write_in_blocks(paths, stems, Encoding(48000, bit_depth=32), frames)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["loud.wav", "quiet.wav"]
    for path, stem in zip(paths, stems):
        resampled = resample(torch.from_numpy(stem), 44100, 48000).numpy()[:, :frames]
        written, rate = read(path)
        assert rate == 48000 and written.shape == (2, frames)
        np.testing.assert_allclose(written, resampled / max(1.01 * np.abs(stem).max(), 1.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("format", ["wav", "flac"])
def test_stems_written_in_blocks_equal_write_stems_of_the_whole_arrays(tmp_path, format):
    stems = loud_and_quiet(30011)
    frames = math.ceil(30011 * 48000 / 44100) + 5
    blocks, whole = [[tmp_path / folder / f"{name}.{format}" for name in ("loud", "quiet")]
                     for folder in ("blocks", "whole")]
    write_in_blocks(blocks, stems, Encoding(48000, format=format, bit_depth=24), frames)
    write_stems(dict(zip(whole, stems)), Encoding(48000, format=format, bit_depth=24), frames=frames)
    for block_path, whole_path in zip(blocks, whole):
        assert sf.info(block_path).frames == frames
        np.testing.assert_array_equal(read(block_path, "int32")[0], read(whole_path, "int32")[0])


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_inside_the_with_block_leaves_nothing_behind(tmp_path, error):
    out = tmp_path / "song"
    out.mkdir()
    (out / "drums.wav").write_bytes(b"previous run")
    with pytest.raises(error):
        outputs = dict.fromkeys([out / "vocals.wav", out / "drums.wav"], Encoding(44100))
        with open_stem_writers(outputs, frames=1000) as writers:
            writers.write([tones(44100, 500)] * 2)
            assert len(list(out.iterdir())) == 3  # the stems are kept in temporaries meanwhile
            raise error
    assert [p.name for p in out.iterdir()] == ["drums.wav"]
    assert (out / "drums.wav").read_bytes() == b"previous run"


def test_a_full_disk_is_an_output_error_that_leaves_nothing_behind(tmp_path, monkeypatch):
    def disk_full(file, block):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audio, "_append_raw", disk_full)
    with pytest.raises(OutputError, match=f"^cannot write {tmp_path / 'vocals.wav'}: No space left on device$"):
        write_stems({tmp_path / "vocals.wav": tones(44100, 100)}, Encoding(44100), frames=100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("format", ["wav", "flac", pytest.param("mp3", marks=needs_encoder("libmp3lame"))])
def test_tags_are_written_where_the_format_can_store_them(tmp_path, format):
    tags = {"title": "My song (vocals)", "artist": "Motörhead", "album_artist": "Various", "track": "3"}
    path = tmp_path / f"vocals.{format}"
    write_stems({path: tones(44100, 1000)}, Encoding(44100, format=format, tags=tags), frames=1000)
    stored = tags if format == "mp3" else {key: value for key, value in tags.items() if key != "album_artist"}
    assert load_audio(path)[1].tags == stored


# Opens a song, reads it in overlapping windows as the separation does, writes four stems
# (the window's middle at four gains) and prints its peak RSS before and after, in MiB.
STREAMING_CHILD = """
import resource, sys
from pathlib import Path
from stemsplit.audio import Encoding, open_song, open_stem_writers

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

baseline = peak()
song_path, out = Path(sys.argv[1]), Path(sys.argv[2])
window, stride = 441000, 330750
with open_song(song_path) as song:
    paths = [out / f"{gain}.wav" for gain in (1, 2, 3, 4)]
    with open_stem_writers(dict.fromkeys(paths, Encoding(44100)), frames=song.length) as writers:
        for start in range(0, song.length, stride):
            context = (window - stride) // 2
            middle = song.read(start - context, window)[:, context:context + min(stride, song.length - start)]
            writers.write([0.1 * gain * middle for gain in (1, 2, 3, 4)])
print(baseline, peak(), song.length)
"""


def test_memory_does_not_grow_with_the_song(tmp_path):
    minutes = 4  # at 44.1 kHz each whole signal would take 85 MB (81 MiB), the four stems 339 MB
    song = tmp_path / "song.flac"
    with sf.SoundFile(song, "w", 48000, 2, "PCM_24") as file:  # a 440 Hz sine at 1/8, right channel at half
        for start in range(0, 48000 * 60 * minutes, 48000 * 10):
            t = np.arange(start, start + 48000 * 10) / 48000
            left = 0.125 * np.sin(2 * np.pi * 440 * t)
            file.write(np.stack([left, 0.5 * left], axis=1))
    child = subprocess.run([sys.executable, "-c", STREAMING_CHILD, song, tmp_path], capture_output=True,
                           text=True, check=True)
    baseline, peak, length = map(float, child.stdout.split())
    print(f"peak RSS {peak:.0f} MiB, {peak - baseline:.0f} MiB above the {baseline:.0f} MiB after imports")
    assert length == 44100 * 60 * minutes
    assert peak - baseline < 64  # less than one whole-song signal (5-9 MiB measured for 1-3 minutes)
    assert sf.info(tmp_path / "4.wav").frames == length
    first = 39 * audio.BLOCK_FRAMES - 1000  # far into the song, across a block of the finishing pass
    written, _ = sf.read(tmp_path / "1.wav", start=first, frames=2000, dtype="float32", always_2d=True)
    expected = 0.1 * 0.125 * np.sin(2 * np.pi * 440 * np.arange(first, first + 2000) / 44100)
    np.testing.assert_allclose(written.T, [expected, 0.5 * expected], atol=2e-5)


def test_stems_finished_in_parallel_equal_those_finished_one_by_one(tmp_path):
    stems = stems_for(30_000)
    written = {}
    for jobs in (1, 3):
        paths = [tmp_path / str(jobs) / f"{name}.flac" for name in stems]
        outputs = dict.fromkeys(paths, Encoding(48000, format="flac"))
        with open_stem_writers(outputs, frames=32_000, jobs=jobs) as writers:
            writers.write(list(stems.values()))
        written[jobs] = [sf.read(path)[0] for path in paths]
    for one, parallel in zip(written[1], written[3]):
        assert one.shape == (32_000, 2)
        np.testing.assert_array_equal(one, parallel)
