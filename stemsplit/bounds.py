"""Bounds on the sizes a model's files give (a config's values, a package's constructor arguments),
checked before anything is built or sized from them: each family states its maxima and the published
model they are measured against, and every family checks its values through one `Bounds`."""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, TypeVar

from .errors import ModelError

Config, Network = TypeVar("Config"), TypeVar("Network")
# A U-Net's stride ** depth: how many samples its deepest layer's one step spans, the multiple every chunk is
# padded to; bounded where a family's maxima name it.
REACH = "stride ** depth"
# The least rate and segment of a demucs package, so that a segment holds samples (the least released: 44.1 kHz,
# 7.8 s segments); segment_length (demucs 2.0.3's, in samples) follows from them.
SHORTEST = {"samplerate": 1000, "segment": 1 / 16, "segment_length": 64}


@dataclass(frozen=True)
class Bounds:
    """The largest value of each size a family's files give, and what those maxima are measured against."""

    maxima: Mapping[str, float]
    basis: str  # e.g. "about four times the largest published RoFormer"
    minima: Mapping[str, float] = field(default_factory=dict)  # where the smallest is not 1
    numbers: frozenset[str] = frozenset()  # sizes that may be fractional (others are integers)
    lists: frozenset[str] = frozenset()  # lists whose length is bounded
    sources: int = 32  # the most stems a network may output
    weights: int | None = None  # the most weights (parameters and buffers) a built network may hold

    def integer(self, section: Mapping[str, Any], key: str, section_name: str = "", minimum: int | None = None) -> int:
        """`section[key]`, an integer from `minimum` (else the key's own) to the key's maximum; messages name
        it `section_name.key`."""
        value, least, where = section.get(key), self._least(key, minimum), _prefix(section_name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ModelError(f"{where}{key} must be an integer of at least {least}, not {reprlib.repr(value)}")
        return self._at_most(key, value, where)

    def number(self, section: Mapping[str, Any], key: str, section_name: str = "") -> Real:
        """`section[key]`, a number (an integer, a float or a fraction) from the key's minimum to its maximum."""
        value, least, where = section.get(key), self._least(key, None), _prefix(section_name)
        if isinstance(value, bool) or not isinstance(value, Real) or not value >= least:
            raise ModelError(f"{where}{key} must be a number of at least {least}, not {reprlib.repr(value)}")
        return self._at_most(key, value, where)

    def check_arguments(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        """A demucs package's constructor arguments: the bounded sizes it gives (those it leaves out take
        the network's defaults) and its sources (by position or by name), before any is used."""
        given = {**dict(zip(["sources"], args)), **kwargs}
        for key in sorted(self.maxima.keys() & given.keys()):
            if key in self.lists and isinstance(given[key], (list, tuple)):
                if len(given[key]) > self.maxima[key]:
                    raise ModelError(f"{key} holds {len(given[key])} values, more than the {self.maxima[key]} "
                                     f"stemsplit allows ({self.basis})")
            elif given[key] is not None:  # None: the network's default (e.g. channels_time: as channels)
                (self.number if key in self.numbers else self.integer)(given, key)
        self.check_sources(given.get("sources"))

    def build(self, args: tuple, kwargs: Mapping[str, Any], configure: Callable[..., Config],
              network: Callable[[Config], Network]) -> Network:
        """A package's network, `network(configure(*args, **kwargs))`, its arguments and weights bounded first."""
        self.check_arguments(args, kwargs)
        config = configure(*args, **kwargs)
        if REACH in self.maxima:
            self.integer({REACH: config.stride ** config.depth}, REACH)
        self.check_weights(lambda: network(config))
        return network(config)

    def check_sources(self, sources: Any) -> None:
        if not isinstance(sources, (list, tuple)) or not 0 < len(sources) <= self.sources \
                or not all(isinstance(source, str) for source in sources) or len(set(sources)) != len(sources):
            raise ModelError(f"sources must be 1 to {self.sources} distinct names")

    def check_weights(self, build: Callable[[], Any]) -> None:
        """How many weights the network `build` makes would hold, counted on torch's meta device (which
        allocates nothing), against the most allowed; a network that cannot be built is a ModelError."""
        import torch

        try:
            with torch.device("meta"), _without_random_draws():
                network = build()
        except (ValueError, RuntimeError, TypeError, ZeroDivisionError) as error:
            raise ModelError(f"its sizes do not make a network: {str(error).splitlines()[0][:200]}") from error
        count = sum(tensor.numel() for tensor in [*network.parameters(), *network.buffers()])
        if self.weights is not None and count > self.weights:
            raise ModelError(f"it would hold {count:,} weights, more than the {self.weights:,} stemsplit allows "
                             f"({self.basis})")

    def _least(self, key: str, minimum: float | None) -> float:
        return self.minima.get(key, 1) if minimum is None else minimum

    def _at_most(self, key: str, value: Any, where: str) -> Any:
        if value > self.maxima[key]:
            raise ModelError(f"{where}{key} is {reprlib.repr(value)}, more than the {self.maxima[key]} stemsplit "
                             f"allows ({self.basis})")
        return value


def _prefix(section_name: str) -> str:
    return f"{section_name}." if section_name else ""


# Tensor methods that draw random values in place, as modules initialise their weights.
RANDOM_DRAWS = frozenset({"normal_", "uniform_", "bernoulli_", "exponential_", "random_", "log_normal_", "cauchy_",
                          "geometric_"})


def _without_random_draws() -> Any:
    """A torch function mode in which those draws leave their tensor as it is: on the meta device there is
    nothing to draw, and torch's meta `normal_` imports torch._dynamo on its first call (seconds)."""
    from torch.overrides import TorchFunctionMode

    class WithoutRandomDraws(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in RANDOM_DRAWS:
                return args[0] if args else kwargs["tensor"]  # a method's self, or torch.nn.init's `tensor`
            return func(*args, **kwargs)

    return WithoutRandomDraws()
