"""How a model becomes a bag of networks.

A catalogue model (catalogue.py) is built by its family (stemsplit/families/) from its files,
fetched and verified from their source, the Hub or URLs (sources.py); an ensemble from the bags of its parts.
A local folder of demucs packages (`--repo DIR`) is read by packages.py, and local checkpoint
files (`--checkpoint PATH [--config FILE]`) by whichever family recognises them.
"""

from __future__ import annotations

from pathlib import Path

from .bag import Bag
from .catalogue import CONFIGS, ModelInfo, default_model, default_query_model, find_model
from .downloads import Announcement, Notify
from .errors import ModelError, SettingsError
from .family import CatalogueFiles, Fetched, LocalFiles
from .queries import NO_QUERIES, Queries, refusal
from .sources import fetch_file, file_cached


def load_bag(name: str | None = None, repo: Path | None = None, notify: Notify = lambda message: None,
             checkpoint: Path | None = None, config: Path | None = None, queries: Queries = NO_QUERIES) -> Bag:
    """The named model (default: the catalogue's, or its default query model where there are `queries`) from
    the Hub through its cache or from the local folder `repo`, or local `checkpoint` files (with their
    `config`, where the family needs one). `notify` hears of each file downloaded, with its size, and of the
    model's licence."""
    from .families import for_local

    if queries:
        if checkpoint is not None or repo is not None:
            raise SettingsError("queries run catalogue query models; drop --checkpoint/--repo", "query")
        return download_bag(find_model(name or default_query_model()), notify, queries)
    if checkpoint is not None:
        local = LocalFiles(checkpoint, config)
        return for_local(local).local_bag(local)
    name = name or default_model()
    if repo is not None:
        from .packages import folder_bag

        return folder_bag(repo, name)
    return download_bag(find_model(name), notify)


def download_bag(info: ModelInfo, notify: Notify = lambda message: None, queries: Queries = NO_QUERIES) -> Bag:
    """A catalogue model's bag, its files downloaded (and verified) first if they are not cached; a query
    model's with one network per query."""
    from .families import family

    problem = refusal(info.name, info.queries, queries) if (queries or info.queries) else None
    if problem:
        raise SettingsError(problem, "query")
    if info.is_ensemble:
        return ensemble_bag(info, notify)
    row = family(info.family)
    missing = sorted(key for key in row.entry_keys if not getattr(info, key, None))
    if missing:
        raise ModelError(f"model catalogue entry '{info.name}' is malformed: a {row.name} model needs "
                         f"{', '.join(missing)}")
    files = fetch_files(info, notify)
    if queries:
        return query_bag(info, files, queries, notify)
    bag = row.catalogue_bag(files)
    check_loaded(info, bag)
    return bag


def fetch_files(info: ModelInfo, notify: Notify = lambda message: None) -> CatalogueFiles:
    """A network model's files, downloaded (and verified) first if they are not cached."""
    announcement = Announcement(info, notify)
    fetched = tuple(Fetched(*fetch_file(info, file, announcement), file) for file in info.files)
    identity = f"{info.name}:" + ",".join(file.sha256 for file in fetched)
    return CatalogueFiles(info, fetched, CONFIGS / info.config if info.config else None, identity)


def download(info: ModelInfo, notify: Notify = lambda message: None) -> None:
    """A model fetched and checked for later runs: its networks loaded once, as a run would; a query model's
    files verified (its networks are built for the queries of a run)."""
    if info.queries:
        fetch_files(info, notify)
    else:
        download_bag(info, notify)


def query_bag(info: ModelInfo, files: CatalogueFiles, queries: Queries, notify: Notify) -> Bag:
    """A query model's bag for `queries`: its stems each query's and its residual, in order; the queries
    in its identity, so that --skip-existing tells runs of other queries apart."""
    from dataclasses import replace

    from .families import family

    build = family(info.family).query_bag
    if build is None:
        raise ModelError(f"model '{info.name}' is catalogued with queries, but family {info.family} takes none")
    bag = build(files, queries, notify)
    others = sorted(bag.families - set(info.network_families))
    if others or bag.stems != queries.outputs:
        raise ModelError(f"model '{info.name}' gave {bag.stems} of {', '.join(bag.families)} networks for the "
                         f"queries {queries.stems}")
    return replace(bag, identity=f"{files.identity}:{queries.identity}")


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
    if info.is_ensemble:
        return all(is_cached(find_model(part.model)) for part in info.parts)
    return all(file_cached(info, file) for file in info.files)
