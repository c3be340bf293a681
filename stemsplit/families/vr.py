"""UVR's VR architecture (`.pth` state dicts with a model-parameters JSON), as audio-separator's
VRSeparator runs them.

The JSON (UVR's `modelparams/*.json`) gives the band split: each band's rate, hop, FFT size and
rows kept, its filters and resampler; its sizes are bounded before anything is allocated. The
network's kind and shape are read from the state dict's keys and shapes (UVR picks them by the
file's size). What the two stems are called comes from the JSON's optional `primary_stem`
(audio-separator's model data), `vocals` when absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import read_json, read_state_dict
from ..chunking import WholeSong
from ..errors import ModelError
from ..family import CheckpointAndConfig, Family, LocalFiles
from ..networks.vr import build, config_from_state
from ..networks.vr_bands import STEREO_MODES, Band, BandParams, VrSeparator, VrSettings

FAMILY = "vr"
# audio-separator's stem pairs (CommonSeparator.STEM_PAIR_MAPPER); any other primary P pairs with "No P".
PAIRS = {"Vocals": "Instrumental", "Instrumental": "Vocals", "lead_only": "backing_only",
         "backing_only": "lead_only", "Primary Stem": "Secondary Stem"}
# Primary stems whose aggression is inverted (CommonSeparator.NON_ACCOM_STEMS).
NON_ACCOMPANIMENT = ("Vocals", "Other", "Bass", "Drums", "Guitar", "Piano", "Synthesizer", "Strings", "Woodwinds",
                     "Brass", "Wind Inst")

# Bounds far above UVR's files (at most 4 bands, n_fft 2048 per band, 1024 or 1280 bins, 48 kHz).
LIMITS = {"bands": 8, "bins": 4096, "rate": 192000, "n_fft": 16384, "hl": 8192}
RESAMPLERS = ("polyphase", "sinc_best", "sinc_medium", "sinc_fastest")


def read_params(path: Path) -> BandParams:
    data = _json(path)
    try:
        return params_from(data)
    except ModelError as error:
        raise ModelError(f"{path}: {error}") from error


def _json(path: Path) -> Any:
    return read_json(path, "model-parameters JSON")


def params_from(data: Any) -> BandParams:
    if not isinstance(data, dict) or not isinstance(data.get("band"), dict):
        raise ModelError("not a VR model-parameters JSON (no `band` mapping)")
    count = len(data["band"])
    if not 1 <= count <= LIMITS["bands"] or set(data["band"]) != {str(i) for i in range(1, count + 1)}:
        raise ModelError(f"`band` must hold bands '1'..'n', 1 to {LIMITS['bands']} of them")
    bands = tuple(_band(data["band"][str(i)], i, count) for i in range(1, count + 1))
    params = BandParams(
        bins=_integer(data, "n_bins" if "n_bins" in data else "bins", LIMITS["bins"]),
        rate=_integer(data, "sr", LIMITS["rate"]),
        pre_filter=(_integer(data, "pre_filter_start", LIMITS["bins"], -1),
                    _integer(data, "pre_filter_stop", LIMITS["bins"], -1)),
        bands=bands, stereo=_stereo(data))
    _check_fit(params)
    return params


def _band(data: Any, index: int, count: int) -> Band:
    if not isinstance(data, dict):
        raise ModelError(f"band {index} is not a mapping")
    n_fft = _integer(data, "n_fft", LIMITS["n_fft"], 2)
    crop = (_integer(data, "crop_start", n_fft // 2 + 1, 0), _integer(data, "crop_stop", n_fft // 2 + 1, 0))
    resampler = data.get("res_type")
    if index < count and resampler not in RESAMPLERS:
        raise ModelError(f"band {index}: res_type {resampler!r} is not one of {', '.join(RESAMPLERS)}")
    conversion = data.get("convert_channels")
    if conversion not in (None, "mid_side_c", "mid_side", "stereo_n"):
        raise ModelError(f"band {index}: unknown convert_channels {conversion!r}")
    lowpass = _pair(data, "lpf", n_fft) if index < count else None  # UVR filters the top band's high side only
    highpass = _pair(data, "hpf", n_fft) if index > 1 or count == 1 else None
    return Band(_integer(data, "sr", LIMITS["rate"]), _integer(data, "hl", LIMITS["hl"]), n_fft, crop,
                str(resampler), lowpass, highpass, conversion)


def _pair(data: dict, prefix: str, n_fft: int) -> tuple[int, int] | None:
    if f"{prefix}_start" not in data:
        return None
    start = _integer(data, f"{prefix}_start", n_fft // 2, -1)
    if start <= 0 and prefix == "hpf":
        return None
    return start, _integer(data, f"{prefix}_stop", n_fft // 2, 0)


def _stereo(data: dict) -> str:
    """The first of the v5 channel modes set, in UVR's order; its other flags change nothing at inference."""
    return next((mode for mode in STEREO_MODES[1:] if data.get(mode)), "stereo")


def _integer(data: dict, key: str, maximum: int, minimum: int = 1) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ModelError(f"`{key}` must be an integer from {minimum} to {maximum}, not {value!r}")
    return value


def _check_fit(params: BandParams) -> None:
    if sum(band.rows for band in params.bands) > params.bins or any(band.rows <= 0 for band in params.bands):
        raise ModelError("the bands' crops must be non-empty and hold at most `bins` rows together")
    if params.bands[-1].rate != params.rate:
        raise ModelError("the top band's `sr` must be the model's `sr`")
    if params.pre_filter[0] > 0 and not params.pre_filter[0] < params.pre_filter[1] <= params.bins + 1:
        raise ModelError("`pre_filter_start` < `pre_filter_stop` <= bins + 1 are needed")


def stem_pair(primary: str) -> tuple[str, str]:
    """(primary, secondary) as audio-separator names them."""
    if primary in PAIRS:
        return primary, PAIRS[primary]
    return primary, primary.removeprefix("No ") if primary.startswith("No ") else f"No {primary}"


def stem_name(label: str) -> str:
    """A file name for one of audio-separator's stem labels: "No Echo" -> "no_echo"."""
    return "_".join(label.lower().replace("_only", "").split())


def primary_stem(path: Path) -> str:
    """The JSON's `primary_stem` (audio-separator's model data, carried with the parameters), else Vocals."""
    value = _json(path).get("primary_stem", "Vocals")
    if not isinstance(value, str) or not 0 < len(value) <= 40 or not value.replace(" ", "").replace("_", "").isalnum():
        raise ModelError(f"{path}: `primary_stem` must be a short name of letters, digits, spaces and _")
    return value


def check_resamplers() -> None:
    try:
        import samplerate  # noqa: F401
        import scipy.signal  # noqa: F401
    except ImportError as error:
        raise ModelError("VR models need samplerate and scipy: pip install 'stemsplit[vr]'") from error


def load_network(checkpoint: Path, params_path: Path) -> VrSeparator:
    check_resamplers()
    params, primary = read_params(params_path), primary_stem(params_path)
    state = read_state_dict(checkpoint)
    try:
        network = build(config_from_state(state, params.bins))
        network.load_state_dict(state, strict=True)
    except (ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0][:200]
        raise ModelError(f"{checkpoint} does not fit {params_path.name} (VR): {first}") from error
    settings = VrSettings(vocals_primary=primary in NON_ACCOMPANIMENT)
    separator = VrSeparator(network.float().eval(), params, settings)
    separator.family, separator.chunking = FAMILY, WholeSong()
    separator.sources = stem_names(params_path) or [stem_name(label) for label in stem_pair(primary)]
    return separator.eval()


def stem_names(path: Path) -> list[str] | None:
    """The JSON's optional `stem_names`, (primary, secondary): what a karaoke model's pair really holds."""
    names = _json(path).get("stem_names")
    if names is None:
        return None
    if (not isinstance(names, list) or len(names) != 2 or len(set(names)) != 2
            or not all(isinstance(n, str) and n.isidentifier() and len(n) <= 40 for n in names)):
        raise ModelError(f"{path}: `stem_names` must be two different short names (letters, digits, _)")
    return names


def _load_without_grad(checkpoint: Path, params_path: Path) -> VrSeparator:
    with torch.no_grad():
        return load_network(checkpoint, params_path)


BAGS = CheckpointAndConfig(_load_without_grad, "one .pth file and its model-parameters JSON")


def recognises(local: LocalFiles) -> bool:
    """A .pth file with a JSON config holding a `band` mapping (UVR's model parameters)."""
    if local.config is None or not local.checkpoint.is_file() or local.checkpoint.suffix.lower() != ".pth":
        return False
    if local.config.suffix.lower() != ".json":
        return False
    data = _json(local.config)
    return isinstance(data, dict) and isinstance(data.get("band"), dict)


FAMILIES = (Family(name=FAMILY, architecture="UVR's VR architecture, v5 and v5.1 nets with band-split spectrograms "
                   "(audio-separator 0.47.1's VRSeparator)", catalogue_bag=BAGS.catalogue_bag,
                   entry_keys=frozenset({"config"}), recognises=recognises, local_bag=BAGS.local_bag),)
