"""Planning a batch: which inputs there are, where each one's outputs go (its {track} name and stem
paths), which inputs are refused, and the identity records that let `--skip-existing` skip only
stems that provably came from this input, model and settings."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError
from .files import sha256_of

# Extensions picked up when a folder is given. Video containers are left out on purpose:
# they can still be separated when named explicitly.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aif",
    ".aiff", ".aifc", ".alac", ".ape", ".wv", ".mka", ".webm", ".ac3", ".mp2", ".caf", ".au",
})
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


# Inputs

def unreadable(path: Path) -> str | None:
    """Why a named input file cannot be read, found before any model is loaded; None if it can be."""
    if not path.exists():
        return "no such file"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


@dataclass(frozen=True)
class Inputs:
    """The inputs found, in order, and those refused with why (a refused input fails on its own)."""

    names: list[str]
    refusals: dict[str, str]


def find_inputs(items: Sequence[str], out: Path | None, extensions: frozenset[str]) -> Inputs:
    """Files as given, glob patterns expanded, folders replaced by the audio files inside them (recursively,
    sorted, hidden ones skipped); a folder walk or a glob takes nothing inside the output folder `out`,
    so that a rerun never takes the stems of any model for inputs."""
    names: list[str] = []
    refusals: dict[str, str] = {}

    def outside(path: Path) -> bool:
        return out is None or not inside(path, out)

    def wanted(found: Path, root: Path) -> bool:
        return (found.is_file() and found.suffix.lower() in extensions and outside(found)
                and not any(part.startswith(".") for part in found.relative_to(root).parts))

    def found_none(item: str, why: str) -> None:
        names.append(item)
        refusals[item] = f"{item}: {why}"

    for item in items:
        path = Path(item)
        if item != "-" and not path.exists() and glob.has_magic(item):
            matches = sorted(Path(match) for match in glob.glob(item, recursive=True))
            audio = [str(m) for m in matches if wanted(m, m.parent)] + [
                str(f) for m in matches if m.is_dir() for f in sorted(m.rglob("*")) if wanted(f, m)]
            names += audio
            if not audio:
                found_none(item, "matches no audio outside the output folder" if matches else "no such file")
        elif item != "-" and path.is_dir():
            audio = sorted(str(found) for found in path.rglob("*") if wanted(found, path))
            names += audio
            if not audio:
                found_none(item, "holds no audio outside the output folder" if out else "holds no audio files")
        elif item != "-" and (why := unreadable(path)):
            found_none(item, why)
        else:
            names.append(item)
    unique = list(dict.fromkeys(names))
    return Inputs(unique, {name: why for name, why in refusals.items() if name in unique})


# Where the outputs go

def stem_paths(out: Path, template: str, input_name: str, model: str, stems: list[str],
               ext: str, track: str | None = None) -> dict[str, Path]:
    """Where each stem of one input goes; never outside `out`. Names too long for the file system are shortened.
    A template that cannot give that is a SettingsError for --filename."""
    source = Path(input_name)
    track = track or safe_name(source.stem if input_name != "-" else "stdin")
    fields = {"track": track, "track_ext": safe_name(source.suffix.lstrip(".")), "model": model, "ext": ext}
    root = out.resolve()
    paths = {}
    try:
        fields["track"] = fit_track(template, {"stem": "", **fields}, stems)
    except (KeyError, IndexError, ValueError):
        pass  # reported below
    for stem in stems:
        try:
            relative = template.format(stem=stem, **fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise SettingsError(f"bad template {template!r}: {exc}", "filename") from None
        path = (root / relative).resolve()
        if root not in path.parents:
            raise SettingsError(f"template {template!r} writes outside the output folder", "filename")
        paths[stem] = path
    if len(set(paths.values())) < len(paths):
        raise SettingsError(f"template {template!r} gives every stem the same file; use {{stem}}", "filename")
    return paths


def refused_inputs(plan: Mapping[str, Mapping[str, Path]], model_out: Path) -> dict[str, str]:
    """Inputs that must not be separated, with the reason: they lie where this model's stems go, or their
    stems would overwrite an input or the stems of an earlier input. Decided on the whole input list, so that
    every shard decides alike."""
    sources = {Path(name).resolve(): name for name in plan if name != "-"}
    owners: dict[Path, str] = {}  # stem path -> the first input writing it
    misplaced = {name: f"{name}: is inside the output folder {model_out}; stems are never taken as inputs"
                 for name in plan if name != "-" and inside(Path(name), model_out)}
    refusals = {}
    for name, paths in plan.items():
        victims = [sources[p] for p in paths.values() if p in sources]
        earlier = [owners[p] for p in paths.values() if p in owners]
        if victims:
            refusals[name] = (f"{name}: a stem would overwrite the input {victims[0]}; "
                              "choose another --out or --filename")
        elif earlier:
            refusals[name] = (f"{name} would overwrite the stems of {earlier[0]}; "
                              "use --filename (e.g. with {track_ext}) or separate runs")
        for p in paths.values():
            owners.setdefault(p, name)
    return {**misplaced, **refusals}
