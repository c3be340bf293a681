"""Which models exist, where their weights come from, and how they are loaded.

The catalogue (models.toml) pins every model to a commit of its Hugging Face Hub
repository and every weight file to its SHA-256, so a file is checked before any
of it is used. Weights come from the Hub, through its standard cache, or from a
local folder laid out like the reference tool's model repository (`--repo DIR`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ModelError

if TYPE_CHECKING:  # torch is imported only when a model is loaded, so listing models stays fast
    from .model import HTDemucs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CATALOGUE = Path(__file__).with_name("models.toml")

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class WeightFile:
    """One network of a model, as published on the Hub and in the legacy repository."""

    signature: str
    safetensors: str
    safetensors_sha256: str
    legacy: str
    legacy_sha256: str
    legacy_size: int
    weights: tuple[float, ...]  # how much each stem of this network counts in the bag


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    stems: tuple[str, ...]
    repo: str
    revision: str
    segment: float
    files: tuple[WeightFile, ...]


@dataclass
class Bag:
    """Networks whose outputs are mixed with per-stem weights to give one model's stems."""

    name: str
    models: list[HTDemucs]
    weights: list[list[float]]  # per network, per source

    def __post_init__(self) -> None:
        if not self.models:
            raise ModelError(f"model '{self.name}' lists no networks")
        first = self.models[0]
        for model in self.models[1:]:
            if (model.sources, model.samplerate, model.audio_channels) != (
                first.sources, first.samplerate, first.audio_channels
            ):
                raise ModelError(
                    f"the networks of model '{self.name}' disagree on sources, sample rate "
                    "or channels, so they cannot be mixed"
                )
        if len(self.weights) != len(self.models) or any(
            len(row) != len(first.sources) for row in self.weights
        ):
            raise ModelError(
                f"model '{self.name}' needs {len(first.sources)} weights (one per source) "
                f"for each of its {len(self.models)} networks"
            )

    @property
    def sources(self) -> list[str]:
        return list(self.models[0].sources)

    @property
    def samplerate(self) -> int:
        return self.models[0].samplerate

    @property
    def audio_channels(self) -> int:
        return self.models[0].audio_channels


# The catalogue

def read_catalogue(path: Path | None = None) -> dict[str, ModelInfo]:
    table = _read_toml(path or CATALOGUE)
    return {
        name: _model_info(name, entry)
        for name, entry in table.items()
        if isinstance(entry, dict)
    }


def default_model(path: Path | None = None) -> str:
    path = path or CATALOGUE
    name = _read_toml(path).get("default")
    if name not in read_catalogue(path):
        raise ModelError(f"{path}: `default` must name one of its models")
    return name


def find_model(name: str, catalogue: dict[str, ModelInfo] | None = None) -> ModelInfo:
    catalogue = read_catalogue() if catalogue is None else catalogue
    if name not in catalogue:
        known = ", ".join(sorted(catalogue))
        raise ModelError(f"unknown model '{name}'; known models: {known} (or use --repo DIR)")
    return catalogue[name]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ModelError(f"cannot read the model catalogue {path}: {error}") from error


def _model_info(name: str, entry: dict[str, Any]) -> ModelInfo:
    try:
        files = tuple(
            WeightFile(**{**file, "weights": tuple(file["weights"])}) for file in entry["files"]
        )
        info = ModelInfo(
            name=name,
            description=entry["description"],
            stems=tuple(entry["stems"]),
            repo=entry["repo"],
            revision=entry["revision"],
            segment=float(entry["segment"]),
            files=files,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"model catalogue entry '{name}' is malformed: {error!r}") from error
    problem = _catalogue_problem(info)
    if problem:
        raise ModelError(f"model catalogue entry '{name}' is malformed: {problem}")
    return info


def _catalogue_problem(info: ModelInfo) -> str | None:
    if not COMMIT_PATTERN.fullmatch(info.revision):
        return "revision must be a full 40-hex commit hash"
    if not info.files:
        return "it lists no files"
    for file in info.files:
        if not (SHA256_PATTERN.fullmatch(file.safetensors_sha256)
                and SHA256_PATTERN.fullmatch(file.legacy_sha256)):
            return f"{file.signature}: SHA-256 values must be 64 lowercase hex digits"
        if len(file.weights) != len(info.stems):
            return f"{file.signature}: needs one weight per stem"
    return None


# Loading a model by name

def load_bag(name: str, repo: Path | None = None) -> Bag:
    """The named model, from the Hub (through its cache) or from the local folder `repo`."""
    if repo is not None:
        return load_local_bag(name, repo)
    return download_bag(find_model(name))


def download_bag(info: ModelInfo) -> Bag:
    from .weights import load_safetensors

    models = [load_safetensors(fetch(info, file)) for file in info.files]
    bag = Bag(info.name, models, [list(file.weights) for file in info.files])
    if bag.sources != list(info.stems):
        raise ModelError(
            f"model '{info.name}' separates {bag.sources}, not {list(info.stems)} "
            "as the catalogue says"
        )
    return bag


# The Hub and its cache

def hub_cache() -> Path:
    """The Hub cache folder, read from the environment now rather than when
    huggingface_hub was imported, so that a changed environment is respected."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or os.path.join(cache_home, "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def is_cached(info: ModelInfo) -> bool:
    """Whether every file of the model is in the cache (looked up on disk, in the Hub cache layout)."""
    snapshot = hub_cache() / f"models--{info.repo.replace('/', '--')}" / "snapshots" / info.revision
    return all((snapshot / file.safetensors).is_file() for file in info.files)


def fetch(info: ModelInfo, file: WeightFile) -> Path:
    """The cached path of a verified weight file, downloading it if needed."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        path = Path(hf_hub_download(
            info.repo,
            file.safetensors,
            revision=info.revision,
            cache_dir=hub_cache(),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            local_files_only=hub_offline(),
        ))
    except LocalEntryNotFoundError as error:
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
        raise ModelError(
            f"model '{info.name}' is not downloaded yet and {reason}; connect once to "
            "download it, or use --repo DIR with local weight files"
        ) from error
    except Exception as error:  # whatever the network or the Hub did wrong
        raise ModelError(
            f"downloading {file.safetensors} of model '{info.name}' from {info.repo} failed "
            f"({_first_line(error)}); check the connection and run again, or use --repo DIR"
        ) from error
    if sha256_of(path) != file.safetensors_sha256:
        _remove_cached(path)
        raise ModelError(
            f"{file.safetensors} of model '{info.name}' was corrupt (sha256 mismatch); "
            "the bad file was removed, run again to re-download"
        )
    return path


def _remove_cached(pointer: Path) -> None:
    """Remove a cached file: the snapshot link and the blob it points to."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# A local folder standing in for the Hub (`--repo DIR`)

def load_local_bag(name: str, folder: Path) -> Bag:
    """`name` is either a bag `<name>.yaml` in `folder` or the signature of one weight
    file there: `<sig>.safetensors` or, in the legacy format, `<sig>-<sha8>.th`."""
    if not folder.is_dir():
        raise ModelError(f"--repo {folder} is not a folder")
    if not NAME_PATTERN.fullmatch(name):
        raise ModelError(f"'{name}' is not a model name (letters, digits, '_' and '-' only)")
    bag_file = folder / f"{name}.yaml"
    if bag_file.is_file():
        signatures, weights, segment = _read_bag_file(bag_file)
    elif _local_weight_file(folder, name):
        signatures, weights, segment = [name], None, None
    else:
        raise ModelError(
            f"{folder} has no model '{name}': expected {name}.yaml, "
            f"{name}.safetensors or {name}-<sha8>.th"
        )
    models = [_load_local_model(folder, signature) for signature in signatures]
    if weights is None:
        weights = [[1.0] * len(models[0].sources) for _ in models]
    if segment is not None:
        _shorten_segment(models, segment)
    return Bag(name, models, weights)


def _read_bag_file(path: Path) -> tuple[list[str], list[list[float]] | None, Fraction | None]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        signatures = [str(signature) for signature in spec["models"]]
        weights = spec.get("weights")
        if weights is not None:
            weights = [[float(weight) for weight in row] for row in weights]
        segment = spec.get("segment")
        segment = None if segment is None else Fraction(str(segment))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelError(f"{path} is not a valid bag file (it needs a `models:` list): {error!r}") from error
    if not signatures or not all(NAME_PATTERN.fullmatch(signature) for signature in signatures):
        raise ModelError(f"{path}: `models:` must list model signatures")
    return signatures, weights, segment


def _shorten_segment(models: list[HTDemucs], segment: Fraction) -> None:
    """A bag may ask for a shorter segment than its networks were trained on, never a longer one."""
    for model in models:
        model.segment = min(model.segment, segment)


def _local_weight_file(folder: Path, signature: str) -> Path | None:
    safetensors = folder / f"{signature}.safetensors"
    if safetensors.is_file():
        return safetensors
    legacy = sorted(folder.glob(f"{signature}-*.th")) + sorted(folder.glob(f"{signature}.th"))
    if len(legacy) > 1:
        raise ModelError(f"{folder} has several weight files for '{signature}'; keep only one")
    return legacy[0] if legacy else None


def _load_local_model(folder: Path, signature: str) -> HTDemucs:
    path = _local_weight_file(folder, signature)
    if path is None:
        raise ModelError(
            f"{folder} has no weights for network '{signature}': "
            f"expected {signature}.safetensors or {signature}-<sha8>.th"
        )
    from .weights import load_legacy, load_safetensors

    _check_local_file(path, signature)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return load_legacy(path)


def _check_local_file(path: Path, signature: str) -> None:
    """Check the SHA-256 a file's name promises and, for catalogue files, the pinned one."""
    sha256 = sha256_of(path)
    _, _, prefix = path.stem.partition("-")
    if prefix and not sha256.startswith(prefix):
        raise ModelError(
            f"{path} is corrupt: its sha256 does not start with {prefix} as its name says; "
            "replace it with a good copy"
        )
    pinned = {file.signature: file for info in read_catalogue().values() for file in info.files}
    if signature not in pinned:
        return
    expected = {pinned[signature].safetensors: pinned[signature].safetensors_sha256,
                pinned[signature].legacy: pinned[signature].legacy_sha256}.get(path.name)
    if expected is not None and sha256 != expected:
        raise ModelError(
            f"{path} is corrupt (sha256 mismatch with the catalogue); replace it with a good copy"
        )
