"""What a chain is, in names only (no torch, so that the catalogue and the command line check chains before any
model loads): its steps, and the stems it ends with.

A chain's first step separates the song; each later step separates one stem of what came before (its `stem`)
with another model. The final stems are the first step's stems with every split stem replaced, where it stood,
by the stems of the model that split it: `STEM.PART` (the vocals split by a karaoke model: `vocals.vocals`,
`vocals.no_vocals`), or the names the step gives them (`names`: PART -> name, `lead`, `backing`). Every split
of a stem sums to that stem, so the final stems sum to the song.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

MAX_STEPS = 8  # each step is a whole separation of the song's length


@dataclass(frozen=True)
class ChainStep:
    """One step: `model` run on the song (the first step, `stem` None) or on the stem `stem` of what came before."""

    model: str
    stem: str | None = None
    names: tuple[tuple[str, str], ...] = ()  # the model's stems -> the names the chain gives them


@dataclass(frozen=True)
class Placed:
    """A stem of the chain: its `name`, and the `stem` of step `step` that it is."""

    name: str
    step: int
    stem: str


@dataclass(frozen=True)
class Layout:
    """Where a chain's stems come from: the final ones, and for each step the stem it splits (None: the song)."""

    final: tuple[Placed, ...]
    inputs: tuple[Placed | None, ...]

    @property
    def names(self) -> list[str]:
        return [placed.name for placed in self.final]


def lay_out(steps: Sequence[ChainStep], stems_of: Sequence[Sequence[str]]) -> Layout:
    """The layout of `steps`, whose models give `stems_of` (one list per step); a ValueError says what is wrong."""
    if not 2 <= len(steps) <= MAX_STEPS:
        raise ValueError(f"a chain has 2 to {MAX_STEPS} steps, not {len(steps)}")
    if steps[0].stem is not None:
        raise ValueError("the first step separates the song: it takes no stem")
    final: list[Placed] = []
    inputs: list[Placed | None] = []
    for index, (step, stems) in enumerate(zip(steps, stems_of)):
        unknown = [part for part, _ in step.names if part not in stems]
        if unknown:
            raise ValueError(f"step {index + 1} names a stem '{unknown[0]}' that {step.model} does not give "
                             f"({', '.join(stems)})")
        final, taken = _split(final, index, step, stems)
        inputs.append(taken)
    names = [placed.name for placed in final]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"the chain would give two stems named '{twice[0]}'; name them apart")
    return Layout(tuple(final), tuple(inputs))


def _split(final: list[Placed], index: int, step: ChainStep,
           stems: Sequence[str]) -> tuple[list[Placed], Placed | None]:
    """The stems after step `index`, and the stem it took (None for the first step)."""
    names = dict(step.names)
    if step.stem is None:
        if index:
            raise ValueError(f"step {index + 1} ({step.model}) needs the stem it separates")
        return [Placed(names.get(stem, stem), index, stem) for stem in stems], None
    here = [placed.name for placed in final]
    if step.stem not in here:
        raise ValueError(f"step {index + 1} takes a stem '{step.stem}' that the chain does not have before it; "
                         f"it has {', '.join(here)}")
    at = here.index(step.stem)
    parts = [Placed(names.get(stem, f"{step.stem}.{stem}"), index, stem) for stem in stems]
    return final[:at] + parts + final[at + 1:], final[at]


def parse_then(value: str) -> ChainStep:
    """A `--then STEM:MODEL` value as a step; a ValueError if it is not one."""
    stem, colon, model = (part.strip() for part in value.partition(":"))
    if not (colon and stem and model):
        raise ValueError(f"{value!r} is not STEM:MODEL (e.g. vocals:mel_band_roformer_karaoke_aufr33_viperx)")
    return ChainStep(model, stem)
