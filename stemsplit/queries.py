"""Queries: what a query model is asked to separate (`--query TEXT`, `--query-audio FILE`).

A query model (catalogue `job = "query"`, with `queries` saying what it takes) separates one stem per
query: the sound the query names, `<query>`, and its residual `no_<query>`, the mix minus that sound.
Several queries in one run are separated independently, each from the whole mix: their stems may
overlap (two queries can hear the same guitar), so each pair sums to the mix, not all stems together.
This module imports no torch: queries are checked before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .batch import safe_name, truncate
from .errors import InputError, SettingsError
from .files import sha256_of

LABELS, TEXT, AUDIO = "labels", "text", "audio"  # what a catalogue entry's `queries` may list
KINDS = {LABELS: "AudioSet labels (other words matched to the closest label)", TEXT: "free text",
         AUDIO: "example recordings"}
MAX_STEM_BYTES = 100  # a query's stem name, in UTF-8: file names must fit it, its residual and an extension
RESIDUAL_PREFIX = "no_"


def stem_name(query: str) -> str:
    """The stem a query writes: the query with runs of blanks made one space, no path separators or control
    characters, no leading dots, at most MAX_STEM_BYTES bytes."""
    return truncate(safe_name(" ".join(query.split())), MAX_STEM_BYTES).strip()


def residual_name(stem: str) -> str:
    return f"{RESIDUAL_PREFIX}{stem}"


@dataclass(frozen=True)
class Queries:
    """The queries of one run, in order: texts (`--query`) then example recordings (`--query-audio`)."""

    texts: tuple[str, ...] = ()
    examples: tuple[Path, ...] = ()

    @classmethod
    def of(cls, texts: tuple[str, ...] = (), examples: tuple[Path | str, ...] = ()) -> Queries:
        """The queries given, blanks in texts made single spaces, each once (a repeated query would write the
        same stem twice), checked."""
        texts = tuple(dict.fromkeys(" ".join(text.split()) for text in texts))
        queries = cls(texts, tuple(dict.fromkeys(Path(path) for path in examples)))
        queries.check()
        return queries

    def __bool__(self) -> bool:
        return bool(self.texts or self.examples)

    @property
    def stems(self) -> list[str]:
        """Each query's stem, in order."""
        return [stem_name(text) for text in self.texts] + [stem_name(path.stem) for path in self.examples]

    @property
    def outputs(self) -> list[str]:
        """The stems written: each query's, then its residual."""
        return [name for stem in self.stems for name in (stem, residual_name(stem))]

    @property
    def kinds(self) -> set[str]:
        return ({TEXT} if self.texts else set()) | ({AUDIO} if self.examples else set())

    def check(self) -> None:
        """SettingsError for an empty query or two that write the same stem; InputError for an example that
        is not a readable file (whether it is audio is found when it is decoded)."""
        if any(not text.split() for text in self.texts):
            raise SettingsError("a query needs words, e.g. --query 'acoustic guitar'", "query")
        for path in self.examples:
            if not path.is_file() or not _readable(path):
                raise InputError(f"--query-audio {path}: not a readable file")
        outputs = self.outputs
        clash = next((name for name in outputs if outputs.count(name) > 1), None)
        if clash is not None:
            raise SettingsError(f"two queries write the stem '{clash}'; give each query once, with names that "
                                "differ", "query")

    @property
    def identity(self) -> str:
        """What the queries were, for identity records: each text, and each example's SHA-256."""
        examples = [f"{path.name}={sha256_of(path)}" for path in self.examples]
        return "queries:" + "|".join([*(f"text={text}" for text in self.texts), *examples])


NO_QUERIES = Queries()


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            file.read(1)
        return True
    except OSError:
        return False


def refusal(model: str, takes: tuple[str, ...], queries: Queries) -> str | None:
    """Why `model`, which takes the query kinds `takes` (none: it is no query model), cannot run `queries`."""
    if not takes:
        return f"model '{model}' separates fixed stems and takes no queries; pick a query model with -n " \
               "(`stemsplit models --job query`)"
    if not queries:
        return f"model '{model}' separates what it is asked for: give --query TEXT or --query-audio FILE"
    text_ok = TEXT in takes or LABELS in takes
    if queries.texts and not text_ok:
        return f"model '{model}' takes {describe(takes)}, not --query text"
    if queries.examples and AUDIO not in takes:
        return f"model '{model}' takes {describe(takes)}, not --query-audio recordings"
    return None


def describe(takes: tuple[str, ...]) -> str:
    return " or ".join(KINDS[kind] for kind in takes)


def read_example(path: Path, samplerate: int):
    """An example recording decoded as mono float32 samples at `samplerate` (numpy, (samples,)); an InputError
    where it is no audio. For families turning examples into conditions."""
    import numpy as np

    from .audio import open_song

    with open_song(path, samplerate, channels=1) as song:
        return np.asarray(song.read(0, song.length), dtype=np.float32).reshape(-1)
