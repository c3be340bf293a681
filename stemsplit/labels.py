"""The 527 AudioSet labels USS is queried by, and how a query's words find one. Imports no torch.

audioset_labels.csv is a copy of `metadata/class_labels_indices.csv` of bytedance/uss (commit c19e2c5a,
an Apache-2.0 repository; the same bytes as the file panns-inference fetches), which is Google's AudioSet
class list (index, machine id, display name) in the order of Cnn14's 527 outputs. Google publishes AudioSet's
labels with the dataset under CC BY 4.0 (as its site states; not re-checked here, offline).

A query finds its label by, in turn: the label's name or one of its comma-separated names, ignoring case
("guitar" -> "Guitar", "man speaking" -> "Male speech, man speaking"); the most words in common, a final
"s" ignored ("drums" -> "Drum"), ties broken by difflib's similarity of the whole text; difflib's closest name
(similarity at least 0.6) for a misspelling ("gitar" -> "Guitar").
"""

from __future__ import annotations

import csv
import difflib
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from .errors import SettingsError

LABELS_FILE = Path(__file__).with_name("audioset_labels.csv")
CLOSE_ENOUGH = 0.6  # difflib's ratio
WORD = re.compile(r"[a-z0-9]+")


class Match(NamedTuple):
    index: int  # among Cnn14's outputs
    label: str
    how: str  # "name", "words" or "spelling"


@lru_cache(maxsize=1)
def labels() -> tuple[str, ...]:
    with open(LABELS_FILE, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return tuple(row["display_name"] for row in sorted(rows, key=lambda row: int(row["index"])))


def words(text: str) -> set[str]:
    return {word[:-1] if len(word) > 3 and word.endswith("s") else word for word in WORD.findall(text.lower())}


def match(query: str) -> Match:
    """The label a query asks for; a SettingsError where none is close."""
    names = labels()
    wanted = query.strip().lower()
    for index, label in enumerate(names):
        if wanted in (part.strip().lower() for part in (label, *label.split(","))):
            return Match(index, label, "name")
    by_words = _by_words(query, names)
    if by_words is not None:
        return by_words
    close = difflib.get_close_matches(wanted, [name.lower() for name in names], n=1, cutoff=CLOSE_ENOUGH)
    if close:
        index = [name.lower() for name in names].index(close[0])
        return Match(index, names[index], "spelling")
    raise SettingsError(f"no AudioSet label is close to '{query}'; `stemsplit queries` lists the 527 labels",
                        "query")


def _by_words(query: str, names: tuple[str, ...]) -> Match | None:
    asked = words(query)
    shared = [len(asked & words(name)) for name in names]
    best = max(shared)
    if not best:
        return None
    tied = [index for index, count in enumerate(shared) if count == best]
    index = max(tied, key=lambda i: difflib.SequenceMatcher(None, query.lower(), names[i].lower()).ratio())
    return Match(index, names[index], "words")
