"""`--chain NAME` and `--then STEM:MODEL` on the command line, checked before any model loads where the
catalogue can tell (no torch here): a bad value is one `error:` line and the usage exit code."""

from __future__ import annotations

from pathlib import Path

import click

from .catalogue import default_model, find_model
from .chain_steps import ChainStep, lay_out, parse_then
from .errors import ModelError


def chosen_model(model_name: str | None, chain_name: str | None) -> str | None:
    """The model `-n` or `--chain` names; `--chain` must name a chain of the catalogue."""
    if chain_name is None:
        return model_name
    if model_name is not None:
        raise click.UsageError("use either -n or --chain")
    try:
        is_chain = find_model(chain_name).is_chain
    except ModelError as error:
        raise click.BadParameter(str(error), param_hint="--chain") from None
    if not is_chain:
        raise click.BadParameter(f"'{chain_name}' is a model, not a chain: use -n {chain_name}", param_hint="--chain")
    return chain_name


def then_steps(values: tuple[str, ...], model_name: str | None, repo: Path | None,
               checkpoint: Path | None) -> tuple[ChainStep, ...]:
    """The `--then` steps; with catalogue models, their models and stems checked against it."""
    try:
        plans = tuple(parse_then(value) for value in values)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--then") from None
    if plans and repo is None:
        _check_in_catalogue(plans, None if checkpoint else model_name or default_model())
    return plans


def _check_in_catalogue(plans: tuple[ChainStep, ...], first: str | None) -> None:
    """Each step's model is one of the catalogue's and no chain; with the first model's stems known (`first`, a
    catalogue model), each step's stem is one the chain has there."""
    try:
        infos = [find_model(plan.model) for plan in plans]
    except ModelError as error:
        raise click.BadParameter(str(error), param_hint="--then") from None
    try:
        head = find_model(first) if first else None
    except ModelError:
        return  # -n's own error, said when its model loads
    chains = [info.name for info in infos if info.is_chain]
    if chains:
        raise click.BadParameter(f"'{chains[0]}' is a chain; --then takes a model (add that chain's steps as "
                                 "--then options)", param_hint="--then")
    if head is None:
        return
    steps = list(head.steps) or [ChainStep(head.name)]
    try:
        lay_out([*steps, *plans], [find_model(step.model).stems for step in steps] + [info.stems for info in infos])
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--then") from None
