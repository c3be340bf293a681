"""The catalogue (models.toml): which models exist, their family, licence, stems and files.

A *network model* is made by one family from its weight files (`files`), fetched from the Hub
or from plain URLs (`urls`, pinned by SHA-256 and size; see sources.py), pinned by SHA-256 where a
public page gives it; its networks may be of several `families` (mdx mixes two). An *ensemble*
takes stems from other models (`parts`), its `residual` stem the mix minus the others. A *chain*
(`family = "chain"`) separates a stem of one model with the next (`steps`, see chain_steps.py).
Reading the catalogue imports no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .cards import Card, card_from
from .chain_steps import ChainStep, lay_out
from .errors import ModelError
from .families import family_names

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

CATALOGUE = Path(__file__).with_name("models.toml")
CONFIGS = Path(__file__).with_name("configs")  # the config files catalogue entries name
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
PREFIX_PATTERN = re.compile(r"[0-9a-f]{1,64}")
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class WeightFile:
    """One network's file (or an archive of files): on the Hub, pinned by SHA-256 or verified against the
    Hub's own when `sha256` is None; or at `urls` (a primary and mirrors of the same bytes), pinned by
    `sha256` and `size`, or, where no page publishes them, verified at first download as far as `size` and
    `sha256_prefix` (the first hex digits of its SHA-256 that its name carries) go, and recorded."""

    name: str
    sha256: str | None = None
    urls: tuple[str, ...] = ()
    size: int | None = None  # bytes to download: required for URL files, published where known for the Hub's
    sha256_prefix: str | None = None  # URL files without a sha256: what their SHA-256 begins with, if known
    legacy: str | None = None  # demucs packages: the file's name in the reference tool's original repository
    legacy_sha256: str | None = None
    shares: tuple[float, ...] | None = None  # how much each stem of this network counts in the model

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
    """A catalogue entry: a network model of one `family`, or an ensemble of `parts`."""

    name: str
    description: str
    licence: str
    stems: tuple[str, ...]
    family: str | None = None  # the family that builds the bag; None for an ensemble
    families: tuple[str, ...] = ()  # those its networks may be of, when there are several
    repo: str = ""
    revision: str = ""
    repo_type: str = "model"  # or "dataset", where a Hub dataset hosts the weights
    files: tuple[WeightFile, ...] = ()
    config: str | None = None  # a file in stemsplit/configs, for families that read one
    params: tuple[tuple[str, Any], ...] = ()  # per-file parameters some families take from the entry (MDX-Net)
    segment: float | None = None  # demucs bags: seconds pushed into their members, as the reference's bag does
    parts: tuple[EnsemblePart, ...] = ()  # ensembles
    residual: str | None = None  # ensembles: the stem that is the mix minus the others
    names: tuple[tuple[str, str], ...] = ()  # a network's stem -> what the model calls it, where they differ
    card: Card = Card()  # what helps choose it: job, published quality, measured cost, who trained it
    steps: tuple[ChainStep, ...] = ()  # chains

    @property
    def is_ensemble(self) -> bool:
        return bool(self.parts)

    @property
    def is_chain(self) -> bool:
        return self.family == CHAIN

    @property
    def made_of(self) -> tuple[str, ...]:
        """The models an ensemble or a chain runs (none for a network model)."""
        return tuple(part.model for part in self.parts) or tuple(step.model for step in self.steps)

    @property
    def network_families(self) -> tuple[str, ...]:
        return self.families or (self.family,)

    @property
    def kind(self) -> str:
        """How `stemsplit models` names what it is: its family (or families), or the models it ensembles."""
        if self.is_ensemble:
            return f"ensemble of {' + '.join(part.model for part in self.parts)}"
        if self.is_chain:
            return "chain of " + ", then ".join(
                step.model + (f" on the {step.stem}" if step.stem else "") for step in self.steps)
        names = self.network_families
        return f"family {names[0]}" if len(names) == 1 else f"families {' + '.join(names)}"

    @property
    def weight_files(self) -> frozenset[WeightFile]:
        """Every file the model downloads: its own, or for an ensemble its parts' (each part's all)."""
        if not self.made_of:
            return frozenset(self.files)
        return frozenset().union(*(find_model(model).weight_files for model in self.made_of))

    @property
    def download_size(self) -> int | None:
        """Bytes of its files, or None where a file's size is not published."""
        sizes = [file.size for file in self.weight_files]
        return None if None in sizes else sum(sizes)

    @property
    def pinning(self) -> str:
        """"yes": a commit and every file's SHA-256 are pinned; "sha256": the files are, the revision is a
        branch; "no": verified at first download (against the Hub's own SHA-256, or a URL file's size and
        SHA-256 prefix where known), then against what was recorded."""
        if self.made_of:
            pins = {find_model(model).pinning for model in self.made_of}
            return "no" if "no" in pins else "sha256" if "sha256" in pins else "yes"
        if not all(file.sha256 for file in self.files):
            return "no"
        from_hub = any(not file.urls for file in self.files)
        return "sha256" if from_hub and not COMMIT_PATTERN.fullmatch(self.revision) else "yes"


REFUSED = "refused"  # the catalogue's table of models known and not run: name -> why
CHAIN = "chain"  # the family of chains


def read_catalogue(path: Path | None = None) -> dict[str, ModelInfo]:
    table = _read_toml(path or CATALOGUE)
    catalogue = {name: _model_info(name, entry) for name, entry in table.items()
                 if isinstance(entry, dict) and name != REFUSED}
    for info in catalogue.values():
        chains = [model for model in info.made_of if model in catalogue and catalogue[model].is_chain]
        problem = _chain_problem(info, catalogue) if info.is_chain else \
            f"its part {chains[0]} is a chain; an ensemble takes stems from models" if chains else None
        if problem:
            raise ModelError(f"model catalogue entry '{info.name}' is malformed: {problem}")
    return catalogue


def default_model(path: Path | None = None) -> str:
    path = path or CATALOGUE
    name = _read_toml(path).get("default")
    if name not in read_catalogue(path):
        raise ModelError(f"{path}: `default` must name one of its models")
    return name


def find_model(name: str, catalogue: dict[str, ModelInfo] | None = None) -> ModelInfo:
    if catalogue is None:
        catalogue = read_catalogue()
        refused = _read_toml(CATALOGUE).get(REFUSED, {})
        if name in refused:
            raise ModelError(f"model '{name}' is not supported: {refused[name]}")
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
        files = tuple(WeightFile(**{**file, "shares": _tuple_or_none(file.get("shares")),
                                    "urls": tuple(file.get("urls", ()))})
                      for file in entry.get("files", ()))
        parts = tuple(EnsemblePart(part["model"], tuple(part["stems"])) for part in entry.get("parts", ()))
        info = ModelInfo(name=name, family=entry.get("family"), families=tuple(entry.get("families", ())),
                         description=entry["description"],
                         licence=entry["licence"], stems=tuple(entry["stems"]), repo=entry.get("repo", ""),
                         revision=entry.get("revision", ""), repo_type=entry.get("repo_type", "model"), files=files,
                         config=entry.get("config"), parts=parts, residual=entry.get("residual"),
                         segment=entry.get("segment"), params=tuple(entry.get("params", {}).items()),
                         names=tuple(entry.get("names", {}).items()),
                         card=card_from(entry, tuple(entry["stems"])), steps=_chain_steps(entry))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelError(f"model catalogue entry '{name}' is malformed: {error!r}") from error
    problem = _chain_form_problem(info) if info.is_chain or info.steps else \
        _ensemble_problem(info) if info.is_ensemble else _network_model_problem(info)
    if problem:
        raise ModelError(f"model catalogue entry '{name}' is malformed: {problem}")
    return info


def _tuple_or_none(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(value) for value in values)


def _chain_steps(entry: dict[str, Any]) -> tuple[ChainStep, ...]:
    return tuple(ChainStep(step["model"], step.get("stem"), tuple(step.get("names", {}).items()))
                 for step in entry.get("steps", ()))


def _chain_form_problem(info: ModelInfo) -> str | None:
    if not info.is_chain or not info.steps:
        return f"a chain has family = \"{CHAIN}\" and steps"
    return "a chain has steps, and no files or parts" if info.files or info.parts else None


def _chain_problem(info: ModelInfo, catalogue: dict[str, ModelInfo]) -> str | None:
    """What is wrong with a chain's steps, against the models they name: each a network model or an
    ensemble (chains do not nest, so none can come round to itself), each stem one the chain has there."""
    for step in info.steps:
        if step.model not in catalogue:
            return f"its step {step.model} is not a model of the catalogue"
        if catalogue[step.model].is_chain:
            return f"its step {step.model} is a chain; chains do not nest (list that chain's steps instead)"
    try:
        stems = lay_out(info.steps, [catalogue[step.model].stems for step in info.steps]).names
    except ValueError as error:
        return str(error)
    return None if tuple(stems) == info.stems else f"its steps give the stems {stems}, not {list(info.stems)}"


def _ensemble_problem(info: ModelInfo) -> str | None:
    if info.family is not None:
        return "an ensemble has parts and no family"
    return None if info.residual in info.stems else "an ensemble needs a residual stem"


def _network_model_problem(info: ModelInfo) -> str | None:
    if info.family not in family_names():
        return f"family must be one of {', '.join(family_names())}, or parts for an ensemble"
    if info.families and (info.family not in info.families
                          or not set(info.families) <= set(family_names())):
        return f"families must list {info.family} and other rows of the family table only"
    if not info.files:
        return "it needs files"
    if any(not file.urls for file in info.files) and not (info.repo and info.revision):
        return "files from the Hub need a repo and a revision"
    if info.repo_type not in ("model", "dataset"):
        return "repo_type must be model or dataset"
    if info.names and not all(isinstance(name, str) and name for pair in info.names for name in pair):
        return "names maps the network's stem names to the model's"
    if info.segment is not None and (isinstance(info.segment, bool) or not isinstance(info.segment, (int, float))
                                     or not 0 < info.segment <= 3600):
        return "segment must be a number of seconds, up to an hour"
    for file in info.files:
        problem = _file_problem(file, len(info.stems))
        if problem:
            return f"{file.name}: {problem}"
    return None


def _file_problem(file: WeightFile, stems: int) -> str | None:
    for sha256 in (file.sha256, file.legacy_sha256):
        if sha256 is not None and not SHA256_PATTERN.fullmatch(sha256):
            return "SHA-256 values must be 64 lowercase hex digits"
    if file.sha256_prefix is not None and not (file.urls and _prefix_agrees(file)):
        return "sha256_prefix is for files from urls: 1 to 64 lowercase hex digits that begin its sha256, if given"
    if file.shares is not None and len(file.shares) != stems:
        return "needs one share per stem"
    if file.size is not None and (type(file.size) is not int or file.size <= 0):
        return "size must be a positive whole number of bytes"
    return _url_file_problem(file) if file.urls else None


def _prefix_agrees(file: WeightFile) -> bool:
    prefix = file.sha256_prefix
    return isinstance(prefix, str) and PREFIX_PATTERN.fullmatch(prefix) is not None \
        and (file.sha256 or prefix).startswith(prefix)


def _url_file_problem(file: WeightFile) -> str | None:
    if file.sha256 is not None and file.size is None:
        return "a file from urls pinned by its sha256 needs its size in bytes too"
    if "/" in file.name or "\\" in file.name or file.name.startswith("."):
        return "a file from urls needs a plain file name"
    for url in file.urls:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            return f"{url!r} is not an http(s) URL"
    return None
