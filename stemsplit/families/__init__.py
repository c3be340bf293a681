"""The family table: each family's name (the catalogue's `family`) and the module declaring it.

A new family is one module here, declaring `FAMILIES` (see stemsplit/family.py), and one row
below. Modules are imported when a family is first looked up; their top level imports no torch.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module

from ..errors import ModelError
from ..family import Family, LocalFiles, PackageBuilder

TABLE = {
    "htdemucs": "htdemucs",
    "hdemucs": "demucs_v3",
    "demucs": "demucs_v3",
    "bs_roformer": "roformer",
    "mel_band_roformer": "roformer",
    "spleeter": "spleeter",
    "mdx23c": "mdxc",
    "mdx_net": "mdxnet",
    "vr": "vr",
    "demucs_v2": "demucs_v2",
    "tasnet": "demucs_v2",
    "uss": "uss",
    "audiosep": "audiosep",
}


def family_names() -> tuple[str, ...]:
    return tuple(TABLE)


@lru_cache(maxsize=None)
def family(name: str) -> Family:
    if name not in TABLE:
        raise ModelError(f"unknown family '{name}'; known families: {', '.join(TABLE)}")
    declared = {row.name: row for row in import_module(f".{TABLE[name]}", __name__).FAMILIES}
    return declared[name]


def families() -> list[Family]:
    return [family(name) for name in TABLE]


def for_local(local: LocalFiles) -> Family:
    """The family whose files `--checkpoint` (and `--config`) name."""
    if not local.checkpoint.exists():
        raise ModelError(f"--checkpoint {local.checkpoint} does not exist")
    claims = [row for row in families() if row.local_bag is not None and row.recognises(local)]
    if not claims:
        given = f"{local.checkpoint}" + (f" with {local.config}" if local.config else "")
        raise ModelError(f"no model family recognises {given}; a RoFormer checkpoint needs its YAML (--config)")
    return claims[0]


def package_builder(klass: str) -> PackageBuilder | None:
    """The builder of a demucs package whose `klass` is `klass`, if a family runs it."""
    builders = {name: build for row in families() for name, build in row.package_classes.items()}
    return builders.get(klass)


def package_classes() -> list[str]:
    return [name for row in families() for name in row.package_classes]
