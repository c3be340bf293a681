"""How a model becomes a bag of networks.

A catalogue model (catalogue.py) is built by its family (stemsplit/families/) from its files,
fetched and verified from their source, the Hub or URLs (sources.py); an ensemble from the bags of its parts.
A local folder of demucs packages (`--repo DIR`) is read by packages.py, and local checkpoint
files (`--checkpoint PATH [--config FILE]`) by whichever family recognises them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .bag import Bag
from .catalogue import CONFIGS, ModelInfo, default_model, find_model
from .downloads import Announcement, Notify
from .errors import ModelError
from .family import CatalogueFiles, Fetched, LocalFiles
from .sources import fetch_file, file_cached

if TYPE_CHECKING:
    from .chain import Chain


def load_bag(name: str | None = None, repo: Path | None = None, notify: Notify = lambda message: None,
             checkpoint: Path | None = None, config: Path | None = None) -> Bag | Chain:
    """The named model (default: the catalogue's) from the Hub through its cache or from the local
    folder `repo`, or local `checkpoint` files (with their `config`, where the family needs one).
    `notify` hears of each file downloaded, with its size, and of the model's licence."""
    from .families import for_local

    if checkpoint is not None:
        local = LocalFiles(checkpoint, config)
        return for_local(local).local_bag(local)
    name = name or default_model()
    if repo is not None:
        from .packages import folder_bag

        return folder_bag(repo, name)
    return download_bag(find_model(name), notify)


def download_bag(info: ModelInfo, notify: Notify = lambda message: None) -> Bag | Chain:
    """A catalogue model's bag (a chain's steps), its files downloaded (and verified) first if they are not cached."""
    from .families import family

    if info.is_ensemble:
        return ensemble_bag(info, notify)
    if info.is_chain:
        from .chain import load_chain

        return load_chain(info.name, info.steps, lambda name: download_bag(find_model(name), notify))
    row = family(info.family)
    missing = sorted(key for key in row.entry_keys if not getattr(info, key, None))
    if missing:
        raise ModelError(f"model catalogue entry '{info.name}' is malformed: a {row.name} model needs "
                         f"{', '.join(missing)}")
    announcement = Announcement(info, notify)
    fetched = tuple(Fetched(*fetch_file(info, file, announcement), file) for file in info.files)
    identity = f"{info.name}:" + ",".join(file.sha256 for file in fetched)
    bag = row.catalogue_bag(CatalogueFiles(info, fetched, CONFIGS / info.config if info.config else None, identity))
    bag = bag.renamed(dict(info.names))
    check_loaded(info, bag)
    return bag


def check_loaded(info: ModelInfo, bag: Bag) -> None:
    """The catalogue's word against what loaded: the stems, and the family of every network."""
    others = sorted(bag.families - set(info.network_families))
    if others:
        raise ModelError(f"model '{info.name}' is catalogued as {' + '.join(info.network_families)}, but its "
                         f"files hold a {', '.join(others)} network")
    if tuple(bag.stems) != info.stems:
        raise ModelError(f"model '{info.name}' separates {bag.stems}, not {list(info.stems)} as the catalogue says")


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


def is_cached(info: ModelInfo) -> bool:
    """Whether every file of the model is in its cache (looked up on disk, not verified)."""
    if info.made_of:
        return all(is_cached(find_model(model)) for model in info.made_of)
    return all(file_cached(info, file) for file in info.files)
