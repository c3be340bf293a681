"""Native Instruments stem files (`.stem.mp4`): the mix and four stems in one MP4, for DJ software.

The layout Traktor, Mixxx and djay read: audio track 1 is the mix, tracks 2-5 are drums, bass,
other and vocals, all 44.1 kHz stereo, and a `stem` box in `moov/udta` holds a JSON manifest
with each stem's name and colour. ffmpeg encodes and muxes; the manifest box is added here,
since ffmpeg cannot write an arbitrary user-data box.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from dataclasses import replace
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .audio import Encoding, ffmetadata, ffmpeg_reason, find_ffmpeg, open_stem_writers, run_cancellable
from .errors import OutputError
from .files import output_error, publishing, temporary_prefix

if TYPE_CHECKING:
    from .audio import Song
    from .bag import Bag

SAMPLE_RATE = 44100  # NI's stem format is 44.1 kHz only
SLOTS = ("drums", "bass", "other", "vocals")  # NI's order of the stems after the mix
# Names and colours DJ software shows for each slot (NI's stem creator defaults).
SLOT_LABELS = {"drums": ("Drums", "#009E73"), "bass": ("Bass", "#D55E00"), "other": ("Other", "#CC79A7"),
               "vocals": ("Vocals", "#56B4E9")}
# Each track's title and handler name, as stempeg writes them and reads them back (`stempeg.Info.title`).
TRACK_TITLES = ("Mixture", *(SLOT_LABELS[slot][0] for slot in SLOTS))
FOLDED_INTO_OTHER = ("guitar", "piano")  # extra stems of 6-stem models, mixed into "other"
CODECS = ("aac", "alac")
AAC_BITRATE = "256k"
ALAC_BIT_DEPTHS = (16, 24)
MAJOR_BRAND = "M4A "  # what NI's own stem files declare
BOX_HEADER = struct.Struct(">I4s")


def slot_sources(sources: Sequence[str]) -> list[list[int]]:
    """For each NI slot, the indices of the model's sources mixed into it; ValueError if the
    model's stems cannot fill the four slots."""
    sources = list(sources)
    missing = [slot for slot in SLOTS if slot not in sources]
    unplaced = [name for name in sources if name not in SLOTS and name not in FOLDED_INTO_OTHER]
    if missing or unplaced:
        raise ValueError(f"stem files need drums, bass, other and vocals stems; this model has "
                         f"{', '.join(sources)}")
    slots = [[sources.index(slot)] for slot in SLOTS]
    slots[SLOTS.index("other")] += [sources.index(name) for name in FOLDED_INTO_OTHER if name in sources]
    return slots


def manifest() -> bytes:
    """The JSON of the `stem` box: the four stems' names and colours, NI's mastering effects off."""
    return json.dumps({
        "version": 1,
        "stems": [{"name": SLOT_LABELS[slot][0], "color": SLOT_LABELS[slot][1]} for slot in SLOTS],
        "mastering_dsp": {
            "compressor": {"enabled": False, "input_gain": 0.5, "output_gain": 0.5, "threshold": 0,
                           "ratio": 3, "attack": 0.003, "release": 0.3, "hp_cutoff": 300, "dry_wet": 50},
            "limiter": {"enabled": False, "threshold": 0, "ceiling": -0.35, "release": 0.05},
        },
    }).encode()


def stem_file_frames(frames: int, sample_rate: int) -> int:
    """Length at 44.1 kHz of `frames` at `sample_rate`, as the resampler produces it."""
    return math.ceil(frames * SAMPLE_RATE / sample_rate)


def check_stem_file(encoding: Encoding) -> None:
    """Raise if a stem file cannot be written as `encoding` says."""
    if encoding.stem_codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {encoding.stem_codec!r}")
    if encoding.stem_codec == "alac" and encoding.bit_depth not in ALAC_BIT_DEPTHS:
        raise OutputError(f"alac stem files store 16 or 24 bits, not {encoding.bit_depth}")


def write_stem_file(path: Path, song: Song, blocks: Iterable[torch.Tensor], bag: Bag, encoding: Encoding, *,
                    jobs: int = 1, record: tuple[Path, str] | None = None) -> None:
    """Write `path` from an opened song and the `(sources, channels, n)` blocks `bag` separated it into, in order.

    The mix and the stems go to temporary 44.1 kHz WAV files first (resampled, trimmed to the song's length
    and clipped like any stem), then ffmpeg encodes them into one MP4 under a temporary name, published
    with `record` once complete (see `files.publishing`).
    """
    check_stem_file(encoding)
    slots = slot_sources(bag.stems)
    frames = stem_file_frames(song.info.frames, song.info.sample_rate)
    track = replace(encoding, rate=SAMPLE_RATE, format="wav", tags={},
                    bit_depth=32 if encoding.stem_codec == "aac" else encoding.bit_depth)
    with publishing([path], record) as temporaries, tempfile.TemporaryDirectory(prefix=temporary_prefix()) as folder:
        tracks = [Path(folder) / f"{index}.wav" for index in range(1 + len(SLOTS))]
        with open_stem_writers(dict.fromkeys(tracks, track), frames=frames, source_rate=bag.samplerate,
                               jobs=jobs) as writers:
            position = 0
            for block in blocks:
                separated = block.numpy()
                writers.write([song.read(position, separated.shape[-1]),
                               *(separated[indices].sum(0) for indices in slots)])
                position += separated.shape[-1]
        _mux(tracks, temporaries[path], path, encoding)


def _mux(tracks: Sequence[Path], temporary: Path, path: Path, encoding: Encoding) -> None:
    """Encode the WAV `tracks` (mix first) into the stem file `temporary`; errors name the final `path`."""
    try:
        returncode, stderr = run_cancellable(_mux_command(tracks, temporary, encoding), None)
        if returncode:
            raise OutputError(f"cannot write {path}: {ffmpeg_reason(stderr)}")
        add_stem_box(temporary, manifest())
    except OSError as exc:
        raise output_error(path, exc) from None


def _mux_command(tracks: Sequence[Path], temporary: Path, encoding: Encoding) -> list[str]:
    """ffmpeg's command for `_mux`. Tags go through an ffmetadata file, an input of their own: on the
    command line a long one would exceed the system's limit on arguments."""
    metadata = tracks[0].parent / "metadata.txt"
    metadata.write_text(ffmetadata(encoding.tags), encoding="utf-8")
    inputs = [argument for track in tracks for argument in ("-i", f"file:{track}")]
    maps = [argument for index in range(len(tracks)) for argument in ("-map", f"{index}:a")]
    quality = (["-b:a", AAC_BITRATE] if encoding.stem_codec == "aac"
               else ["-sample_fmt", "s16p" if encoding.bit_depth == 16 else "s32p"])
    # Only the mix plays in players that know nothing of stems; the stems are disabled alternatives.
    dispositions = [argument for index in range(len(tracks))
                    for argument in (f"-disposition:a:{index}", "default" if index == 0 else "0")]
    titles = [argument for index, title in enumerate(TRACK_TITLES) for tag in ("title", "handler_name")
              for argument in (f"-metadata:s:a:{index}", f"{tag}={title}")]
    return [find_ffmpeg()[0], "-nostdin", "-hide_banner", "-loglevel", "error", *inputs,
            "-f", "ffmetadata", "-i", f"file:{metadata}", *maps, "-map_metadata", str(len(tracks)),
            "-f", "mp4", "-brand", MAJOR_BRAND, "-c:a", encoding.stem_codec, *quality, *dispositions, *titles,
            "-y", f"file:{temporary}"]


def add_stem_box(path: Path, content: bytes) -> None:
    """Put a `stem` box holding `content` into `moov/udta` of the MP4 at `path`.

    The movie box must be the file's last box (ffmpeg writes it after the media data unless
    asked for a fast start), so growing it moves no sample and no chunk offset changes.
    """
    with open(path, "r+b") as file:
        end = file.seek(0, os.SEEK_END)
        offset, size, header = _last_top_level_box(file, end)
        file.seek(offset)
        moov = file.read(size)
        if moov[4:8] != b"moov":
            raise OutputError(f"cannot write {path}: ffmpeg did not put the movie box last")
        children = _child_boxes(moov[header:])
        stem = _box(b"stem", content)
        udta = next((i for i, child in enumerate(children) if child[4:8] == b"udta"), None)
        if udta is None:
            children.append(_box(b"udta", stem))
        else:
            children[udta] = _box(b"udta", children[udta][8:] + stem)
        file.seek(offset)
        file.write(_box(b"moov", b"".join(children)))
        file.truncate()


def _box(kind: bytes, payload: bytes) -> bytes:
    return BOX_HEADER.pack(BOX_HEADER.size + len(payload), kind) + payload


def _box_size(header: bytes, file_end: int, offset: int) -> tuple[int, int]:
    """A box's total size and header length from its first 16 bytes (sizes 0 and 1 included)."""
    size, _ = BOX_HEADER.unpack(header[:8])
    if size == 1:
        return struct.unpack(">Q", header[8:16])[0], 16
    if size == 0:
        return file_end - offset, 8
    return size, 8


def _last_top_level_box(file, end: int) -> tuple[int, int, int]:
    """Offset, size and header length of the last box at the top of an MP4 file."""
    offset = last = 0
    while offset < end:
        file.seek(offset)
        size, header = _box_size(file.read(16), end, offset)
        if size < header:
            raise OutputError(f"cannot write {file.name}: malformed MP4 box at byte {offset}")
        last = (offset, size, header)
        offset += size
    return last


def _child_boxes(payload: bytes) -> list[bytes]:
    """The boxes inside a container box's payload, each as its bytes (32-bit sizes only)."""
    children, offset = [], 0
    while offset < len(payload):
        size = BOX_HEADER.unpack_from(payload, offset)[0]
        if size < BOX_HEADER.size:
            raise OutputError("malformed MP4 box inside the movie box")
        children.append(payload[offset:offset + size])
        offset += size
    return children
