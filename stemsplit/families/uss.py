"""USS (ByteDance's universal source separation, uss 0.0.4): a ResUNet30 conditioned on Cnn14's AudioSet label
probabilities, queried by AudioSet labels (`--query`) or by example recordings (`--query-audio`).

A catalogue entry's files: the separator's Lightning checkpoint (its `ss_model.*` weights; a pickle, read with
the restricted unpickler) and Cnn14's checkpoint (its `model` weights), the tagger uss's inference loads for
the labels and the examples; in that order. Both queries need the tagger. `params` may give other channel
counts (`separator_channels`, `tagger_channels`), for small test models; the catalogue's use the released ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..bag import Bag, query_bag
from ..errors import InputError, ModelError
from ..family import CatalogueFiles, Family
from ..labels import match
from ..networks.cnn14 import Cnn14, Cnn14Config
from ..networks.cnn14 import from_reference as tagger_names
from ..networks.query import Conditioned, FixedCondition
from ..networks.resunet import ResUNet30, ResUNetConfig
from ..networks.resunet import from_reference as separator_names
from ..networks.uss import LabelQueried, example_condition
from ..queries import Queries, read_example
from ..unpickling import load_restricted

NAME = "uss"
SEPARATOR_PREFIX = "ss_model."


def checkpoint_state(path: Path, key: str) -> dict[str, torch.Tensor]:
    """The weights a torch checkpoint keeps under `key` (Lightning's `state_dict`, PANNs' `model`)."""
    holder = load_restricted(path)
    state = holder.get(key) if isinstance(holder, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} holds no `{key}` weights, so it is no USS file")
    return state


def load_strict(network: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        reason = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise ModelError(f"{name} does not fit USS's configuration: {reason}") from None
    return network.float().eval()


def networks(files: CatalogueFiles) -> tuple[ResUNet30, Cnn14]:
    if len(files.files) != 2:
        raise ModelError(f"model '{files.info.name}' needs two files: USS's checkpoint and Cnn14's")
    params = dict(files.info.params)
    separator_config = ResUNetConfig(**({"encoder_channels": tuple(params["separator_channels"])}
                                        if "separator_channels" in params else {}))
    tagger_config = Cnn14Config(**({"channels": tuple(params["tagger_channels"])}
                                   if "tagger_channels" in params else {}))
    separator_file, tagger_file = (fetched.path for fetched in files.files)
    state = {key[len(SEPARATOR_PREFIX):]: value for key, value in checkpoint_state(separator_file, "state_dict")
             .items() if key.startswith(SEPARATOR_PREFIX)}
    separator = load_strict(ResUNet30(separator_config, NAME), separator_names(state), separator_file.name)
    tagger = load_strict(Cnn14(tagger_config), tagger_names(checkpoint_state(tagger_file, "model")),
                         tagger_file.name)
    return separator, tagger


def build(files: CatalogueFiles, queries: Queries, notify: Callable[[str], None]) -> Bag:
    separator, tagger = networks(files)
    members = []
    for text, stem in zip(queries.texts, queries.stems):
        found = match(text)
        notify(f"query '{text}': AudioSet label '{found.label}'" + ("" if found.how == "name" else
                                                                    f" (closest by {found.how})"))
        members.append(LabelQueried(separator, tagger, [found.index], stem))
    for path, stem in zip(queries.examples, queries.stems[len(queries.texts):]):
        condition = example_condition(tagger, read_example(path, separator.samplerate), separator.chunking.segment)
        if condition is None:
            raise InputError(f"--query-audio {path}: the example is silent (no 0.1 s with a peak above 0.02)")
        members.append(Conditioned(separator, FixedCondition(condition), stem))
    return query_bag(files.info.name, members, files.identity)


def no_queries(files: CatalogueFiles) -> Bag:
    raise ModelError(f"model '{files.info.name}' separates what it is asked for: give --query or --query-audio")


FAMILIES = (Family(name=NAME, architecture="USS: ResUNet30 with FiLM on Cnn14's AudioSet label probabilities; "
                   "matches uss 0.0.4 and panns-inference 0.1.1", catalogue_bag=no_queries, query_bag=build),)
