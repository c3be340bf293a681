"""Planning a batch: the {track} name of each input, and the identity records that let
`--skip-existing` skip only stems that provably came from this input, model and settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from .files import sha256_of

RECORD_SUFFIX = ".stemsplit.json"  # the record sits beside the first stem: `.vocals.wav.stemsplit.json`
NAME_MAX = 255  # bytes in one path component on common file systems


def safe_name(name: str) -> str:
    """A track name usable as one path component."""
    cleaned = "".join("_" if ch in '/\\' or ord(ch) < 32 or ord(ch) == 127 else ch for ch in name)
    cleaned = cleaned.strip().lstrip(".")
    return cleaned or "track"


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, never inside a character."""
    return os.fsencode(text)[:max(limit, 0)].decode("utf-8", errors="ignore")


def fit_track(template: str, fields: dict[str, str], stems: list[str]) -> str:
    """The {track} field shortened so that no component of any stem's path exceeds NAME_MAX bytes."""
    track = fields["track"]
    for stem in stems:
        parts = Path(template.format(**{**fields, "track": track, "stem": stem})).parts
        excess = max(len(os.fsencode(part)) for part in parts) - NAME_MAX
        if excess > 0:
            track = truncate(track, len(os.fsencode(track)) - excess) or "track"
    return track


def track_names(files: list[str]) -> dict[str, str]:
    """The {track} of each input: its file name without extension, sanitised. Inputs that would share
    one (`a/song.wav`, `b/song.wav`) get their folder's name added, "song (a)", or where that is
    shared too, a digest of the input as given. It depends only on the whole list, so shards agree."""
    base = {name: safe_name(Path(name).stem if name != "-" else "stdin") for name in files}
    groups: dict[str, list[str]] = defaultdict(list)
    for name, track in base.items():
        groups[track.casefold()].append(name)  # case-insensitive file systems would merge them
    tracks = {}
    for members in groups.values():
        labels = [safe_name(Path(name).parent.name or "current folder") for name in members]
        if len(members) > 1 and len({label.casefold() for label in labels}) < len(members):
            labels = [hashlib.sha256(os.fsencode(name)).hexdigest()[:8] for name in members]
        for name, label in zip(members, labels):
            tracks[name] = base[name] if len(members) == 1 else f"{base[name]} ({label})"
    return tracks


def inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (both compared resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def record_path(paths: Mapping[str, Path]) -> Path:
    first = next(iter(paths.values()))
    return first.with_name(f".{truncate(first.name, NAME_MAX - len(RECORD_SUFFIX) - 1)}{RECORD_SUFFIX}")


def record_text(input_digest: str, model: str, settings: Mapping[str, object], paths: Mapping[str, Path]) -> str:
    """The identity record of stems: the input's SHA-256, the model's identity, the settings that change
    the output, and each stem's file."""
    return json.dumps({"input_sha256": input_digest, "model": model, "settings": dict(settings),
                       "stems": {stem: path.name for stem, path in paths.items()}}, sort_keys=True) + "\n"


def already_done(input_name: str, model: str, settings: Mapping[str, object], paths: Mapping[str, Path]) -> bool:
    """Whether every stem is there with a record saying it came from this input, model and settings."""
    if input_name == "-" or not all(path.is_file() and path.stat().st_size > 0 for path in paths.values()):
        return False
    try:
        written = record_path(paths).read_text(encoding="utf-8")
        return written == record_text(sha256_of(Path(input_name)), model, settings, paths)
    except (OSError, UnicodeDecodeError):
        return False
