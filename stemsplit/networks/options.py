"""A network's typed configuration from the constructor arguments a weight file stores."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from ..errors import ModelError

Config = TypeVar("Config")


def config_from_reference(cls: type[Config], args: tuple, kwargs: dict[str, Any], training_only: frozenset[str],
                          only_supported: dict[str, tuple[Any, str]]) -> Config:
    """`cls(...)` from the reference's arguments: `sources` may come by position, keys in
    `training_only` are ignored, `only_supported` maps a key to the one value implemented and
    the words that name any other, and every other key must be a field of `cls`."""
    if len(args) > 1:
        raise ModelError("only `sources` may be given by position")
    kwargs = {**dict(zip(["sources"], args)), **kwargs}
    names = {field.name for field in fields(cls)}
    unknown = kwargs.keys() - names - training_only - only_supported.keys()
    if unknown:
        raise ModelError(f"unknown model options: {', '.join(sorted(unknown))}")
    reasons = [why for key, (value, why) in only_supported.items() if kwargs.get(key, value) != value]
    if reasons:
        raise ModelError(f"unsupported model options: {'; '.join(reasons)}")
    try:
        return cls(**{key: value for key, value in kwargs.items() if key in names})
    except TypeError as error:
        raise ModelError(f"incomplete model options: {error}") from error
