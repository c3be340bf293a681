"""Stem files as the sigsep tools read them (issue 22): `stempeg` 0.2.6, the reader musdb uses, with Debian's
ffmpeg and ffprobe. Reading needs nothing more: gpac's MP4Box is what stempeg *writes* NI stem files with
(stempeg/write.py), never what it reads them with. Skipped, saying which is missing, where they are not installed
(imageio-ffmpeg ships no ffprobe; .ci/run installs Debian's ffmpeg with CI=true, so CI runs it)."""

# ruff: noqa: F811 - the fixture imported from test_stemfile is redefined as a parameter

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import load_audio, sdr, separate_tensor, stemsplit, tone
from stemsplit.registry import load_bag
from test_stemfile import NI_STEMS, manifest, repo, rescaled  # noqa: F401

MISSING = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"stempeg's tools are not installed: {', '.join(MISSING)} "
                                "(Debian's ffmpeg package gives both)")


def test_stempeg_reads_our_stem_files_track_by_track(tmp_path, repo):
    stempeg = pytest.importorskip("stempeg", reason="stempeg 0.2.6 is not installed")
    song = tmp_path / "song.wav"
    sf.write(song, tone(2.0, 44100), 44100, subtype="FLOAT")
    result = stemsplit(song, "-n", "tiny", "--repo", repo, "-o", tmp_path / "out", "--format", "stem", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "tiny" / "song.stem.mp4"

    info = stempeg.Info(str(path))
    assert info.nb_audio_streams == 5
    assert {info.rate(index) for index in range(5)} == {44100}
    assert {info.channels(index) for index in range(5)} == {2}
    assert [info.title(index) for index in range(5)] == ["Mixture", *(name for name, _ in NI_STEMS)]
    tracks, rate = stempeg.read_stems(str(path), dtype=np.float32)
    assert rate == 44100 and tracks.shape[0] == 5 and tracks.shape[2] == 2
    assert [(stem["name"], stem["color"]) for stem in manifest(path)["stems"]] == NI_STEMS

    mix, _ = load_audio(song, 44100)
    expected = [mix, *separate_tensor(load_bag("tiny", repo), torch.from_numpy(mix)).numpy()]
    n = min(tracks.shape[1], mix.shape[1])
    assert abs(tracks.shape[1] - mix.shape[1]) <= 2048  # AAC's priming and padding, as ffmpeg decodes them
    for index, track in enumerate(tracks):
        scores = [sdr(track.T[:, :n], rescaled(reference)[:, :n]) for reference in expected]
        assert scores[index] > 10, scores  # AAC at 256 kb/s, as test_stemfile measures with ffmpeg
        assert int(np.argmax(scores)) == index, scores  # mix, drums, bass, other, vocals: NI's order
