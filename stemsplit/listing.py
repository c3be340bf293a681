"""`stemsplit models`: the catalogue as a guide (overview, one model in full, JSON, the README's table).

Everything shown comes from models.toml (catalogue.py, cards.py); whether a model is cached is
looked up by the caller and passed in, so this module reads no files and imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

from .cards import EVALUATIONS, JOBS
from .catalogue import ModelInfo, WeightFile
from .chain_steps import ChainStep
from .queries import describe

IsCached = Callable[[ModelInfo], bool]
PINNING = {
    "yes": "pinned: a commit and every file's SHA-256",
    "sha256": "pinned by every file's SHA-256 (the revision is a branch)",
    "no": "verified at first download (against the SHA-256 the Hub publishes, or a URL file's size and SHA-256 "
          "prefix where known), then pinned by the recorded value",
}


def download_size(size: int | None) -> str:
    if size is None:
        return "size not published"
    return f"about {size / 1e6:.{0 if size >= 10e6 else 1}f} MB"


def ordered(catalogue: dict[str, ModelInfo], job: str | None) -> list[ModelInfo]:
    """The models doing `job` (all where None), grouped by job in JOBS order."""
    chosen = [info for info in catalogue.values() if job in (None, info.card.job)]
    return sorted(chosen, key=lambda info: (JOBS + ("",)).index(info.card.job))


def heading(info: ModelInfo, default: str) -> str:
    name = f"{info.name} (default)" if info.name == default else info.name
    takes = f" (takes {describe(info.queries)})" if info.queries else ""
    return f"{name}: {info.card.job or 'job not stated'}: {', '.join(info.stems)}{takes}"


def quality_line(info: ModelInfo) -> str:
    figures = "; ".join(quality.summary() for quality in info.card.quality)
    return f"quality: {figures or 'no published figures'}"


def fastest(catalogue: dict[str, ModelInfo]) -> set[str]:
    """The models that cost least among those measured alike (the same command on the same CPU): only costs
    taken together rank models."""
    runs: dict[tuple[str, str], list[ModelInfo]] = {}
    for info in catalogue.values():
        if info.card.cost:
            runs.setdefault((info.card.cost[0].measured, info.card.cost[0].device), []).append(info)
    return {min(run, key=lambda info: info.card.cost[0].seconds_per_second).name
            for run in runs.values() if len(run) > 1}


def cost_summary(info: ModelInfo, quickest: set[str], unmeasured: str) -> str:
    if not info.card.cost:
        return unmeasured
    mark = ", the fastest of the models measured with it" if info.name in quickest else ""
    return info.card.cost[0].summary() + mark


def cost_line(info: ModelInfo, cached: bool, quickest: set[str]) -> str:
    cost = cost_summary(info, quickest, "cost not measured yet")
    return f"{cost}; download {download_size(info.download_size)}; cached {'yes' if cached else 'no'}"


def overview(catalogue: dict[str, ModelInfo], default: str, job: str | None, is_cached: IsCached) -> list[str]:
    """Five lines per model: what it does, what it is, how good, what it costs, whose it is."""
    lines, quickest = [], fastest(catalogue)
    for info in ordered(catalogue, job):
        lines += [heading(info, default), f"  {info.description}", f"  {quality_line(info)}",
                  f"  {cost_line(info, is_cached(info), quickest)}", f"  licence: {info.licence}"]
    return lines


def origin(info: ModelInfo) -> list[str]:
    """Where its files come from (a chain: its steps, each model's files its own)."""
    if info.is_chain:
        return [step_line(number, step) for number, step in enumerate(info.steps, 1)]
    if info.is_ensemble:
        return [f"stems {', '.join(part.stems)} from {part.model}" for part in info.parts]
    def place(file: WeightFile) -> str:
        if file.urls:
            return " or ".join(file.urls)
        repo_type, repo, revision = ("model", file.repo, file.revision) if file.repo else \
            (info.repo_type, info.repo, info.revision)
        return f"the Hugging Face Hub, {repo_type} {repo} at {revision}"
    return [f"{file.name}: {place(file)}" for file in info.files]


def step_line(number: int, step: ChainStep) -> str:
    named = f" ({', '.join(f'{stem} as {name}' for stem, name in step.names)})" if step.names else ""
    return f"step {number}: {step.model} on {'the ' + step.stem if step.stem else 'the song'}{named}"


def in_full(info: ModelInfo, default: str, cached: bool) -> list[str]:
    """`stemsplit models NAME`: everything the catalogue knows of one model."""
    lines = [heading(info, default), f"  {info.description}", f"  {info.kind}",
             f"  trained: {info.card.trained or 'not stated'}", f"  licence: {info.licence}",
             "  quality (evaluations differ: compare figures of one evaluation only):"]
    lines += [f"    {quality.summary()}: {EVALUATIONS[quality.evaluation].meaning}; from {quality.source}"
              for quality in info.card.quality] or ["    no published figures"]
    lines += ["  cost:"] + ([f"    {cost.summary()}, measured by {cost.measured}" for cost in info.card.cost]
                           or ["    not measured yet"])
    lines += ["  steps:" if info.is_chain else "  files:"] + [f"    {line}" for line in origin(info)]
    lines += [f"  {PINNING.get(info.pinning, info.pinning)}",
              f"  download {download_size(info.download_size)}; cached {'yes' if cached else 'no'}"]
    return lines


def as_json(info: ModelInfo, default: str, cached: bool) -> dict[str, Any]:
    card = asdict(info.card)
    for quality in card["quality"]:
        quality["scores"] = dict(quality["scores"])
        quality["meaning"] = EVALUATIONS[quality["evaluation"]].meaning
    return {"name": info.name, "default": info.name == default, "stems": list(info.stems),
            "description": info.description, "kind": info.kind, "licence": info.licence, **card,
            "files": origin(info), "pinning": PINNING.get(info.pinning, info.pinning),
            "download_bytes": info.download_size, "cached": cached}


def markdown_table(catalogue: dict[str, ModelInfo], default: str) -> str:
    """README's catalogue table: one column per evaluation, so that no column mixes them."""
    header = ["model", "job", "stems", *(EVALUATIONS[key].label for key in EVALUATIONS), "cost", "download",
              "licence"]
    quickest = fastest(catalogue)
    rows = [header, ["---"] * len(header)] + [_table_row(info, default, quickest)
                                              for info in ordered(catalogue, None)]
    return "".join(f"| {' | '.join(row)} |\n" for row in rows)


def _table_row(info: ModelInfo, default: str, quickest: set[str]) -> list[str]:
    by_evaluation = {quality.evaluation: quality for quality in info.card.quality}
    scores = [", ".join(f"{stem} {score:.2f}" for stem, score in by_evaluation[key].scores)
              if key in by_evaluation else "-" for key in EVALUATIONS]
    cost = cost_summary(info, quickest, "not measured")
    name = f"`{info.name}` (default)" if info.name == default else f"`{info.name}`"
    return [name, info.card.job, ", ".join(info.stems), *scores, cost, download_size(info.download_size),
            info.licence]
