"""Community checkpoints, as UVR, MSST and audio-separator use them: a torch pickle of a state dict
(`.ckpt`/`.pth`) and a YAML config. What the config means is its family's business."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from .errors import ModelError
from .unpickling import load_restricted

# Wrappers some trainers save the weights under.
STATE_KEYS = ("state", "state_dict", "model_state_dict", "model")


# Bounds on a YAML file, far above any real config (the largest, a BS-RoFormer's, is 3 KB, 120 values,
# 4 deep) and far below what would take long: aliases ("billion laughs") count as their expanded size.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
# A JSON file (UVR's model parameters, Spleeter's configs: under 2 KB, 3 deep) is bounded the same way.
MAX_JSON_BYTES = 1 << 16
MAX_JSON_DEPTH = 32


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML plus `!!python/tuple`, which the community configs use for band widths,
    within a nesting depth and a count of values with every alias expanded."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"it nests deeper than {MAX_YAML_DEPTH} levels",
                                              self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(None, None, f"it holds more than {MAX_YAML_NODES} values "
                                              "once its aliases are expanded", node.start_mark)
        return node


ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                             lambda loader, node: tuple(loader.construct_sequence(node)))


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for, each alias counted again (sizes: those known, by node id)."""
    if id(node) not in sizes:
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) else [])
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def read_text(path: Path, kind: str, limit: int) -> str:
    """The UTF-8 text of a file (a `kind`) of at most `limit` bytes, no more of it read; an unreadable,
    oversized or undecodable file is a ModelError naming it."""
    try:
        with open(path, "rb") as file:
            content = file.read(limit + 1)
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror}") from error
    if len(content) > limit:
        raise ModelError(f"{path} is not a valid {kind}: it is larger than {_size(limit)}")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ModelError(f"{path} is not a valid {kind}: it is not UTF-8 text (byte {error.start})") from error


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def read_yaml(path: Path, kind: str = "model config") -> Any:
    """The data of a YAML file (a `kind`); an unreadable, undecodable, oversized or invalid file
    is a ModelError naming it."""
    text = read_text(path, kind, MAX_YAML_BYTES)
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ModelError(f"{path} is not a valid {kind}: {problem}") from error


def read_json(path: Path, kind: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The data of a JSON file (a `kind`) of at most `limit` bytes, nested at most MAX_JSON_DEPTH deep;
    anything else is a ModelError naming it."""
    text = read_text(path, kind, limit)
    try:
        data = json.loads(text)
        too_deep = _depth(data) > MAX_JSON_DEPTH
    except json.JSONDecodeError as error:
        raise ModelError(f"{path} is not a valid {kind}: {error}") from None
    except RecursionError:  # json's own limit, far deeper than ours
        too_deep = True
    if too_deep:
        raise ModelError(f"{path} is not a valid {kind}: it nests deeper than {MAX_JSON_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How many lists and objects deep `value` nests."""
    if not isinstance(value, (dict, list)):
        return 0
    return 1 + max(map(_depth, value.values() if isinstance(value, dict) else value), default=0)


def config_section(data: Any, name: str) -> dict:
    """A section of an MSST-style config (`audio`, `model`, `training`, `inference`): a mapping, empty if absent."""
    if not isinstance(data, dict):
        raise ModelError("the config is not a mapping of sections")
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise ModelError(f"the {name} section is not a mapping")
    return section


def load_fitting(network: torch.nn.Module, checkpoint: Path, what: str) -> None:
    """`checkpoint`'s weights into `network`, strict: a weight missing, unexpected or of another shape is
    a ModelError saying how many of each (`what` names the config's kind)."""
    load_state_fitting(network, read_state_dict(checkpoint), checkpoint, what)


def load_state_fitting(network: torch.nn.Module, state: dict[str, torch.Tensor], checkpoint: Path, what: str) -> None:
    """`state` (read from `checkpoint`) into `network`, strict, as load_fitting checks it."""
    expected = network.state_dict()
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    misshapen = {key for key in expected.keys() & state.keys() if expected[key].shape != state[key].shape}
    if missing or unexpected or misshapen:
        example = sorted(missing or unexpected or misshapen)[0]
        raise ModelError(f"{checkpoint} does not fit its config ({what}): {len(missing)} weights missing, "
                         f"{len(unexpected)} unexpected, {len(misshapen)} of another shape (e.g. {example})")
    network.load_state_dict(state, strict=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a torch pickle holding a state dict, possibly wrapped in a dict,
    unpickled with the allow-list, so it can run no code."""
    loaded = load_restricted(path)
    for key in STATE_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()):
        raise ModelError(f"{path} does not hold a state dict of named tensors")
    return dict(loaded)
