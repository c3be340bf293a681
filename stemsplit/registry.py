"""Which models exist, where their weights come from, and how they become bags of networks.

The catalogue (models.toml) names each model's family, licence, stems and weight files,
pinned by SHA-256 where a public page gives it; every file is checked before any of it is
used (see hub.py). Weights come from the Hub through its standard cache, from a local folder
laid out like the reference tool's model repository (`--repo DIR`), or from a local RoFormer
checkpoint with its YAML (`--checkpoint/--config`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import yaml

from .bag import Bag, Member
from .errors import ModelError
from .hub import SHA256_PATTERN, fetch, files_cached, sha256_of

if TYPE_CHECKING:  # torch is imported only when a model is loaded, so listing models stays fast
    from .networks.htdemucs import HTDemucs

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CATALOGUE = Path(__file__).with_name("models.toml")
CONFIGS = Path(__file__).with_name("configs")  # the YAML of each catalogue RoFormer

HTDEMUCS, BS_ROFORMER, MEL_BAND_ROFORMER, ENSEMBLE = "htdemucs", "bs_roformer", "mel_band_roformer", "ensemble"
FAMILIES = (HTDEMUCS, BS_ROFORMER, MEL_BAND_ROFORMER, ENSEMBLE)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
Notify = Callable[[str], None]  # hears of what the user should know, e.g. a first download's licence


@dataclass(frozen=True)
class WeightFile:
    """One network's file on the Hub: pinned by SHA-256, or verified against the Hub's own when `sha256` is None."""

    name: str
    sha256: str | None = None
    legacy: str | None = None  # HT Demucs: its name in the reference tool's original repository
    legacy_sha256: str | None = None
    weights: tuple[float, ...] | None = None  # how much each stem of this network counts in the bag

    @property
    def signature(self) -> str:
        return Path(self.name).stem


@dataclass(frozen=True)
class EnsemblePart:
    """An ensemble's use of another model: the stems taken from it."""

    model: str
    stems: tuple[str, ...]


@dataclass(frozen=True)
class ModelInfo:
    """A catalogue entry."""

    name: str
    family: str
    description: str
    licence: str
    stems: tuple[str, ...]
    repo: str = ""
    revision: str = ""
    repo_type: str = "model"  # or "dataset", where a Hub dataset hosts the weights
    files: tuple[WeightFile, ...] = ()
    config: str | None = None  # RoFormers: the YAML in stemsplit/configs
    parts: tuple[EnsemblePart, ...] = ()  # ensembles
    residual: str | None = None  # ensembles: the stem that is the mix minus the others

    @property
    def pinning(self) -> str:
        """"yes": a commit and every file's SHA-256 are pinned; "sha256": the files are, the revision is a
        branch; "no": checked against the Hub's own SHA-256 at first download, then against that."""
        if self.family == ENSEMBLE:
            pins = {find_model(part.model).pinning for part in self.parts}
            return "no" if "no" in pins else "sha256" if "sha256" in pins else "yes"
        if not all(file.sha256 for file in self.files):
            return "no"
        return "yes" if COMMIT_PATTERN.fullmatch(self.revision) else "sha256"


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
        raise ModelError(f"unknown model '{name}'; known models: {known} "
                         "(or use --repo DIR, or --checkpoint FILE --config FILE)")
    return catalogue[name]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ModelError(f"cannot read the model catalogue {path}: {error}") from error


def _model_info(name: str, entry: dict[str, Any]) -> ModelInfo:
    try:
        files = tuple(WeightFile(**{**file, "weights": _tuple_or_none(file.get("weights"))})
                      for file in entry.get("files", ()))
        parts = tuple(EnsemblePart(part["model"], tuple(part["stems"])) for part in entry.get("parts", ()))
        info = ModelInfo(name=name, family=entry["family"], description=entry["description"],
                         licence=entry["licence"], stems=tuple(entry["stems"]), repo=entry.get("repo", ""),
                         revision=entry.get("revision", ""), repo_type=entry.get("repo_type", "model"), files=files,
                         config=entry.get("config"), parts=parts, residual=entry.get("residual"))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"model catalogue entry '{name}' is malformed: {error!r}") from error
    problem = _catalogue_problem(info)
    if problem:
        raise ModelError(f"model catalogue entry '{name}' is malformed: {problem}")
    return info


def _tuple_or_none(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(value) for value in values)


def _catalogue_problem(info: ModelInfo) -> str | None:
    if info.family not in FAMILIES:
        return f"family must be one of {', '.join(FAMILIES)}"
    if info.family == ENSEMBLE:
        return None if info.parts and info.residual in info.stems else "an ensemble needs parts and a residual stem"
    if not info.repo or not info.revision or not info.files:
        return "it needs a repo, a revision and files"
    if info.repo_type not in ("model", "dataset"):
        return "repo_type must be model or dataset"
    if info.family != HTDEMUCS and not info.config:
        return "a RoFormer needs its config"
    for file in info.files:
        for sha256 in (file.sha256, file.legacy_sha256):
            if sha256 is not None and not SHA256_PATTERN.fullmatch(sha256):
                return f"{file.name}: SHA-256 values must be 64 lowercase hex digits"
        if file.weights is not None and len(file.weights) != len(info.stems):
            return f"{file.name}: needs one weight per stem"
    return None


# Loading a model by name

def load_bag(name: str | None = None, repo: Path | None = None, notify: Notify = lambda message: None,
             checkpoint: Path | None = None, config: Path | None = None) -> Bag:
    """The named model (default: the catalogue's) from the Hub through its cache or from the local
    folder `repo`, or a local `checkpoint` with its `config`. `notify` hears of a first download,
    with the model's licence."""
    if checkpoint is not None:
        if config is None:
            raise ModelError("a checkpoint needs its config (the YAML it was trained with)")
        return checkpoint_bag(checkpoint.stem, checkpoint, config)
    name = name or default_model()
    if repo is not None:
        return load_local_bag(name, repo)
    return download_bag(find_model(name), notify)


def download_bag(info: ModelInfo, notify: Notify = lambda message: None) -> Bag:
    if info.family == ENSEMBLE:
        return ensemble_bag(info, notify)
    if not is_cached(info):
        notify(f"downloading model '{info.name}' (licence: {info.licence})")
    fetched = [fetch(info, file) for file in info.files]
    identity = f"{info.name}:" + ",".join(sha256 for _, sha256 in fetched)
    if info.family == HTDEMUCS:
        from .weights import load_safetensors

        networks = [load_safetensors(path) for path, _ in fetched]
        bag = demucs_bag(info.name, networks, [file.weights for file in info.files], identity)
    else:
        bag = checkpoint_bag(info.name, fetched[0][0], CONFIGS / info.config, identity)
    if tuple(bag.stems) != info.stems:
        raise ModelError(f"model '{info.name}' separates {bag.stems}, not {list(info.stems)} as the catalogue says")
    return bag


def demucs_bag(name: str, networks: list[HTDemucs], weights: list[tuple[float, ...] | None], identity: str) -> Bag:
    """HT Demucs networks mixed with per-stem weights (all 1 where none are given)."""
    sources = list(networks[0].sources)
    if any(list(network.sources) != sources for network in networks):
        raise ModelError(f"the networks of model '{name}' disagree on sources, so they cannot be mixed")
    if any(row is not None and len(row) != len(sources) for row in weights):
        raise ModelError(f"model '{name}' needs {len(sources)} weights (one per source) for each network")
    members = [Member(network, dict(zip(sources, row or [1.0] * len(sources))))
               for network, row in zip(networks, weights)]
    return Bag(name, sources, members, identity=identity)


def checkpoint_bag(name: str, checkpoint: Path, config: Path, identity: str | None = None) -> Bag:
    """A community RoFormer checkpoint with its YAML: a single-target model gives its target and
    `no_{target}`, the mix minus the target; a multi-instrument one gives each instrument."""
    from .checkpoint import load_network

    network = load_network(checkpoint, config)
    if identity is None:
        stat = checkpoint.stat()
        identity = f"{checkpoint.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{sha256_of(config)}"
    weights = {source: 1.0 for source in network.sources}
    if len(network.sources) == 1:
        target = network.sources[0]
        return Bag(name, [target, f"no_{target}"], [Member(network, weights)], f"no_{target}", identity)
    return Bag(name, list(network.sources), [Member(network, weights)], identity=identity)


def ensemble_bag(info: ModelInfo, notify: Notify) -> Bag:
    """Stems taken from other models; the residual stem is the mix minus them all."""
    members, identities = [], []
    for part in info.parts:
        bag = download_bag(find_model(part.model), notify)
        if bag.residual in part.stems:
            raise ModelError(f"ensemble '{info.name}' takes '{bag.residual}' from '{part.model}', "
                             "which only derives it from the mix")
        members += bag.needing(list(part.stems)).members
        identities.append(bag.identity)
    return Bag(info.name, list(info.stems), members, info.residual, "+".join(identities))


# The Hub's cache

def is_cached(info: ModelInfo) -> bool:
    """Whether every file of the model is in the cache (looked up on disk, in the Hub cache layout)."""
    if info.family == ENSEMBLE:
        return all(is_cached(find_model(part.model)) for part in info.parts)
    return files_cached(info)


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
    loaded = [_load_local_model(folder, signature) for signature in signatures]
    networks = [network for network, _ in loaded]
    if weights is not None and len(weights) != len(networks):
        raise ModelError(f"model '{name}' needs one row of weights for each of its {len(networks)} networks")
    if segment is not None:
        apply_bag_segment(networks, segment)
    identity = f"{folder.resolve()}/{name}:" + ",".join(sha256 for _, sha256 in loaded)
    return demucs_bag(name, networks, weights or [None] * len(networks), identity)


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
    if segment is not None and segment <= 0:
        raise ModelError(f"{path}: `segment:` must be a positive number of seconds, not {segment}")
    return signatures, weights, segment


def apply_bag_segment(networks: list[HTDemucs], segment: Fraction) -> None:
    """A bag's segment, as the reference's BagOfModels sets it: networks that run on any length
    (Demucs, Hybrid Demucs) take it; HT Demucs, which runs on its training length, only when
    it is shorter."""
    from .chunking import FittedSegments

    for network in networks:
        fits_any_length = isinstance(network.chunking, FittedSegments)
        network.segment = segment if fits_any_length else min(network.segment, segment)


def _local_weight_file(folder: Path, signature: str) -> Path | None:
    safetensors = folder / f"{signature}.safetensors"
    if safetensors.is_file():
        return safetensors
    legacy = sorted(folder.glob(f"{signature}-*.th")) + sorted(folder.glob(f"{signature}.th"))
    if len(legacy) > 1:
        raise ModelError(f"{folder} has several weight files for '{signature}'; keep only one")
    return legacy[0] if legacy else None


def _load_local_model(folder: Path, signature: str) -> tuple[HTDemucs, str]:
    """A network of the folder and the SHA-256 of its file."""
    path = _local_weight_file(folder, signature)
    if path is None:
        raise ModelError(
            f"{folder} has no weights for network '{signature}': "
            f"expected {signature}.safetensors or {signature}-<sha8>.th"
        )
    from .weights import load_legacy, load_safetensors

    sha256 = _check_local_file(path, signature)
    load = load_safetensors if path.suffix == ".safetensors" else load_legacy
    return load(path), sha256


def _check_local_file(path: Path, signature: str) -> str:
    """Check the SHA-256 a file's name promises and, for catalogue files, the pinned one; return it."""
    sha256 = sha256_of(path)
    _, _, prefix = path.stem.partition("-")
    if prefix and not sha256.startswith(prefix):
        raise ModelError(
            f"{path} is corrupt: its sha256 does not start with {prefix} as its name says; "
            "replace it with a good copy"
        )
    pinned = {file.signature: file for info in read_catalogue().values() for file in info.files}
    if signature in pinned:
        file = pinned[signature]
        expected = {file.name: file.sha256, file.legacy: file.legacy_sha256}.get(path.name)
        if expected is not None and sha256 != expected:
            raise ModelError(f"{path} is corrupt (sha256 mismatch with the catalogue); replace it with a good copy")
    return sha256
