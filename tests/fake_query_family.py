"""`fake_query`, a query family for tests only: the plumbing of `--query`/`--query-audio` (stems, residuals,
records, errors, towers loaded and embeddings computed) where what a real separator computes is not what is
proven. `registered()` adds it to the family table for as long as a test needs it.

Its one weight file (safetensors) holds `scale`. A text's condition is `scale * (len(text) % 5 + 1) / 10`, an
example's `scale` times its RMS; the separator gives the condition times the (mono) mix, in USS's abutting
2-second segments at 16 kHz, so that the engine resamples to and from the input's rate. Tower loads, embeddings
and separator calls are counted.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import safetensors.torch
import torch

from stemsplit import families
from stemsplit.bag import Bag, query_bag
from stemsplit.chunking import AbuttingSegments
from stemsplit.errors import ModelError
from stemsplit.family import CatalogueFiles, Family
from stemsplit.networks.query import Conditioned, FixedCondition
from stemsplit.queries import Queries, read_example

NAME = "fake_query"
SAMPLERATE = 16000
SEGMENT = 2 * SAMPLERATE
TOWERS: Counter[str] = Counter()  # "text" / "audio" -> times loaded
EMBEDDED: Counter[str] = Counter()  # query (text, or example file name) -> times embedded
CALLS: Counter[str] = Counter()  # stem -> separator calls


def text_gain(text: str) -> float:
    return (len(text) % 5 + 1) / 10


class Gain(torch.nn.Module):
    family, samplerate, audio_channels, chunking = NAME, SAMPLERATE, 1, AbuttingSegments(SEGMENT)

    def __init__(self, stem: str):
        super().__init__()
        self.stem = stem

    def forward(self, mix: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        CALLS[self.stem] += 1
        return condition[:, :1, None] * mix


def text_tower(scale: float):
    TOWERS["text"] += 1

    def embed(text: str) -> torch.Tensor:
        EMBEDDED[text] += 1
        return torch.tensor([scale * text_gain(text)])
    return embed


def audio_tower(scale: float):
    TOWERS["audio"] += 1

    def embed(path) -> torch.Tensor:
        EMBEDDED[path.name] += 1
        samples = read_example(path, SAMPLERATE)
        return torch.tensor([scale * float(np.sqrt(np.mean(np.square(samples))))])
    return embed


def build(files: CatalogueFiles, queries: Queries, notify) -> Bag:
    scale = float(safetensors.torch.load_file(files.files[0].path)["scale"])
    conditions = []
    if queries.texts:
        embed_text = text_tower(scale)
        conditions += [embed_text(text) for text in queries.texts]
    if queries.examples:
        embed_audio = audio_tower(scale)
        conditions += [embed_audio(path) for path in queries.examples]
    notify(f"fake query model: {len(conditions)} queries")
    networks = [Conditioned(Gain(stem), FixedCondition(condition), stem)
                for stem, condition in zip(queries.stems, conditions)]
    return query_bag(files.info.name, networks, files.identity)


def no_queries(files: CatalogueFiles) -> Bag:
    raise ModelError("the fake query model runs queries only")


FAMILIES = (Family(name=NAME, architecture="test-only: a query's gain times the mix", catalogue_bag=no_queries,
                   query_bag=build),)


@contextmanager
def registered() -> Iterator[None]:
    """The family table with `fake_query` in it, counters cleared."""
    for counter in (TOWERS, EMBEDDED, CALLS):
        counter.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, f"{families.__name__}.fake_query_family", sys.modules[__name__])
        patch.setitem(families.TABLE, NAME, "fake_query_family")
        families.family.cache_clear()
        try:
            yield
        finally:
            families.family.cache_clear()


def weights(scale: float) -> bytes:
    return safetensors.torch.save({"scale": torch.tensor(scale)})
