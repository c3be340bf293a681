"""What helps a user choose a model: its job, published quality, measured cost and provenance.

A catalogue entry's card (models.toml: `job`, `trained`, `quality`, `cost`). Published figures
come from different evaluations (test sets, metrics, publishers) that are never comparable with
each other, so each figure names its evaluation and they are shown apart, never in one column.
Costs are what benchmarks/ measured, each with its device and the command behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JOBS = ("four-stems", "five-stems", "six-stems", "vocals", "instrumental", "karaoke", "de-reverb", "de-echo",
        "de-noise", "query")
MEAN = "mean"  # a score averaged over the stems, where a publisher gives only that or gives it too


@dataclass(frozen=True)
class Evaluation:
    """Where published figures come from: a short label for tables and what it is, in full."""

    label: str
    meaning: str


EVALUATIONS = {
    "authors": Evaluation("MUSDB18-HQ test, authors",
                          "SDR (dB) on MUSDB18-HQ's 50 test songs, as the model's authors published it"),
    "authors_musdb18": Evaluation("MUSDB18 test, authors",
                                  "SDR (dB) on MUSDB18's 50 test songs (the compressed release), as the model's "
                                  "authors published it"),
    "mdx21": Evaluation("MDX 2021 hidden set",
                        "SDR (dB) per song on the Music Demixing Challenge 2021's hidden set (MDXDB21, 27 "
                        "songs), as the submission's README gives it"),
    "multisong": Evaluation("Multisong, MSST's table",
                            "SDR (dB) on MVSEP's Multisong set, as the table of pretrained models of ZFTurbo's "
                            "Music-Source-Separation-Training (MSST) gives it"),
    "audiosep_music": Evaluation("MUSIC set SDRi, AudioSep's",
                                 "SDR improvement (dB, over the mix) on the MUSIC set's instrument clips, queried by "
                                 "the instrument's name, as AudioSep's README gives it (not MUSDB, not songs)"),
    "audio_separator": Evaluation("audio-separator's songs",
                                  "median SDR (dB, museval) over MUSDB18-HQ training songs, which a model may have "
                                  "been trained on (not a held-out set), from audio-separator 0.47.1's "
                                  "models-scores.json"),
}


@dataclass(frozen=True)
class Quality:
    """Published figures of one evaluation: dB per stem (and `mean`), where they were published."""

    evaluation: str
    scores: tuple[tuple[str, float], ...]
    source: str
    songs: int | None = None  # how many songs, where the evaluation's count varies by model

    def summary(self) -> str:
        figures = ", ".join(f"{stem} {score:.2f}" for stem, score in self.scores)
        songs = f", {self.songs} songs" if self.songs else ""
        return f"{figures} [{EVALUATIONS[self.evaluation].label}{songs}]"


@dataclass(frozen=True)
class Cost:
    """Seconds of wall time per second of audio, as a benchmark measured it."""

    seconds_per_second: float
    precision: str
    device: str
    measured: str  # the benchmark command and input

    def summary(self) -> str:
        return f"{self.seconds_per_second:.2f} s per second of audio ({self.precision}, {self.device})"


@dataclass(frozen=True)
class Card:
    job: str = ""  # one of JOBS, or "" where not stated
    trained: str = ""  # by whom, on what, as they state it
    quality: tuple[Quality, ...] = ()
    cost: tuple[Cost, ...] = ()


def card_from(entry: dict[str, Any], stems: tuple[str, ...]) -> Card:
    """The card of a catalogue entry; ValueError where it is malformed."""
    card = Card(job=entry.get("job", ""), trained=entry.get("trained", ""),
                quality=tuple(_quality(row, stems) for row in entry.get("quality", ())),
                cost=tuple(Cost(**row) for row in entry.get("cost", ())))
    if card.job and card.job not in JOBS:  # the shipped catalogue states every job (a test checks)
        raise ValueError(f"job must be one of {', '.join(JOBS)}")
    return card


def _quality(row: dict[str, Any], stems: tuple[str, ...]) -> Quality:
    fixed = {"evaluation", "source", "songs"}
    if row.get("evaluation") not in EVALUATIONS:
        raise ValueError(f"a quality's evaluation must be one of {', '.join(EVALUATIONS)}")
    scores = tuple((stem, float(score)) for stem, score in row.items() if stem not in fixed)
    unknown = [stem for stem, _ in scores if stem not in (*stems, MEAN)]
    if unknown or not scores:
        raise ValueError(f"quality scores must name the model's stems or {MEAN}, not {unknown or 'none'}")
    return Quality(row["evaluation"], scores, row["source"], row.get("songs"))
