"""UVR's VR procedure around the mask network: the band-split spectrogram of a model-parameters
JSON, windowed mask inference, aggression, and the way back to audio.

The mix (at the top band's rate) is resampled down band by band, each band's STFT (centred,
zero-padded, periodic Hann) cropped to its rows and the rows stacked into one spectrogram of
`bins + 1` rows, with a gentle low-pass at the top. The network sees the magnitude padded by its
offset on both sides and divided by its global maximum, in windows whose middle frames are kept.
The mask, raised to the aggression's exponents, multiplies the mix's spectrum for the primary
stem and (1 - mask) for the secondary: the two spectra sum to the mix's. Each is split back into
bands, filtered, inverted and resampled up with libsamplerate's `sinc_fastest`, band by band,
giving `hop * (frames - 1)` samples at the top band's rate.

Resamplers are those audio-separator 0.47.1 uses (the `samplerate` and `scipy` packages, the
`vr` extra): a different good resampler between bands gives only about 68 dB against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .vr import VrNetConfig

STEREO_MODES = ("stereo", "reverse", "mid_side", "mid_side_b2")
CHANNEL_CONVERSIONS = (None, "mid_side_c", "mid_side", "stereo_n")


@dataclass(frozen=True)
class Band:
    rate: int
    hop: int
    n_fft: int
    crop: tuple[int, int]  # rows of this band's STFT kept, [start, stop)
    resampler: str  # how this band's audio is made from the band above it
    lowpass: tuple[int, int] | None = None
    highpass: tuple[int, int] | None = None
    conversion: str | None = None  # v5.1 nets: the band's channel conversion

    @property
    def rows(self) -> int:
        return self.crop[1] - self.crop[0]


@dataclass(frozen=True)
class BandParams:
    """A model-parameters JSON: the bands from the lowest up."""

    bins: int
    rate: int
    pre_filter: tuple[int, int]
    bands: tuple[Band, ...]
    stereo: str = "stereo"  # v5 nets: how the channels are formed before the STFT
    aggression_correction: tuple[float, float] = (0.0, 0.0)

    @property
    def split_bin(self) -> int:
        """Rows below this take a third of the aggression."""
        return self.bands[0].crop[1]


@dataclass(frozen=True)
class VrSettings:
    window: int = 512  # frames per network window
    aggression: int = 5  # -100..100, in hundredths
    tta: bool = False  # a second pass shifted by half a window, averaged
    post_process: bool = False  # UVR's artefact merge of long confident runs
    post_process_threshold: float = 0.2
    vocals_primary: bool = True  # the primary stem is vocals or another non-accompaniment stem


# Resampling


def resample(wave: np.ndarray, source: int, target: int, kind: str) -> np.ndarray:
    """librosa's resample with `kind` (its `res_type`): the length ceil(n * target / source)."""
    if source == target:
        return wave
    size = math.ceil(wave.shape[-1] * target / source)
    if kind == "polyphase":
        from scipy.signal import resample_poly

        gcd = math.gcd(source, target)
        out = resample_poly(wave, target // gcd, source // gcd, axis=-1)
    elif kind.startswith("sinc_"):
        import samplerate

        out = np.stack([samplerate.resample(channel, target / source, kind) for channel in wave])
    else:
        raise ValueError(f"resampler {kind!r} is not supported; known: polyphase, sinc_best/medium/fastest")
    return fixed_length(out, size).astype(wave.dtype)


def fixed_length(wave: np.ndarray, size: int) -> np.ndarray:
    if wave.shape[-1] >= size:
        return wave[..., :size]
    return np.pad(wave, ((0, 0), (0, size - wave.shape[-1])))


# Spectrograms


def stft(wave: np.ndarray, band: Band) -> np.ndarray:
    """librosa's STFT of each channel: centred, zero-padded, periodic Hann; complex64 like librosa."""
    signal = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float64))
    window = torch.hann_window(band.n_fft, periodic=True, dtype=torch.float64)
    spectrum = torch.stft(signal, band.n_fft, band.hop, window=window, center=True, pad_mode="constant",
                          return_complex=True)
    return spectrum.numpy().astype(np.complex64)


def istft(spectrum: np.ndarray, band: Band) -> np.ndarray:
    """librosa's inverse without a length: hop * (frames - 1) samples per channel."""
    window = torch.hann_window(band.n_fft, periodic=True, dtype=torch.float64)
    wave = torch.istft(torch.from_numpy(spectrum.astype(np.complex128)), band.n_fft, band.hop, window=window,
                       center=True)
    return wave.numpy()


def stereo_in(wave: np.ndarray, mode: str) -> np.ndarray:
    left, right = wave
    if mode == "reverse":
        return np.stack([left[::-1], right[::-1]])
    if mode == "mid_side":
        return np.stack([(left + right) / 2, left - right])
    if mode == "mid_side_b2":
        return np.stack([right + left * 0.5, left - right * 0.5])
    return wave


def stereo_out(wave: np.ndarray, mode: str) -> np.ndarray:
    left, right = wave
    if mode == "reverse":
        return np.stack([left[::-1], right[::-1]])
    if mode == "mid_side":
        return np.stack([left + right / 2, left - right / 2])
    if mode == "mid_side_b2":
        return np.stack([right / 1.25 + 0.4 * left, left / 1.25 - 0.4 * right])
    return wave


def convert_in(spectrum: np.ndarray, conversion: str | None) -> np.ndarray:
    left, right = spectrum
    if conversion == "mid_side_c":
        return np.stack([left + right * 0.25, right - left * 0.25])
    if conversion == "mid_side":
        return np.stack([(left + right) / 2, left - right])
    if conversion == "stereo_n":
        return np.stack([(left + right * 0.25) / 0.9375, (right + left * 0.25) / 0.9375])
    return spectrum


def convert_out(wave: np.ndarray, conversion: str | None) -> np.ndarray:
    left, right = wave
    if conversion == "mid_side_c":
        return np.stack([left / 1.0625 - right / 4.25, right / 1.0625 + left / 4.25])
    if conversion == "mid_side":
        return np.stack([left + right / 2, left - right / 2])
    if conversion == "stereo_n":
        return np.stack([left - right * 0.25, right - left * 0.25])
    return wave


def band_spectrum(wave: np.ndarray, band: Band, params: BandParams, lstm: bool) -> np.ndarray:
    if lstm:
        return convert_in(stft(wave, band), band.conversion)
    return stft(stereo_in(wave, params.stereo), band)


def band_waves(mix: np.ndarray, params: BandParams) -> list[np.ndarray]:
    """The mix at each band's rate, lowest band first; each made from the band above it."""
    waves = [mix]
    for lower, upper in zip(params.bands[-2::-1], params.bands[:0:-1]):
        waves.append(resample(waves[-1], upper.rate, lower.rate, lower.resampler))
    return waves[::-1]


def analyse(mix: np.ndarray, params: BandParams, lstm: bool) -> np.ndarray:
    """The stacked band spectrogram, (2, bins + 1, frames), of a float32 stereo mix at the top band's rate."""
    spectra = [band_spectrum(wave, band, params, lstm) for wave, band in zip(band_waves(mix, params), params.bands)]
    frames = min(spectrum.shape[2] for spectrum in spectra)
    stacked = np.zeros((2, params.bins + 1, frames), np.complex64)
    row = 0
    for spectrum, band in zip(spectra, params.bands):
        stacked[:, row: row + band.rows] = spectrum[:, band.crop[0]: band.crop[1], :frames]
        row += band.rows
    return pre_filtered(stacked, params, lstm)


def pre_filtered(spectrum: np.ndarray, params: BandParams, lstm: bool) -> np.ndarray:
    start, stop = params.pre_filter
    if start <= 0:
        return spectrum
    if lstm:
        return (spectrum * lowpass_ramp(spectrum.shape[1], start, stop)).astype(np.complex64)
    if len(params.bands) == 1:
        return lowpass_steps(spectrum, start, stop)
    gain = 1.0
    for row in range(start + 1, stop):
        gain = math.pow(10, -(row - start) * (3.5 - gain) / 20.0)
        spectrum[:, row] *= gain
    return spectrum


def lowpass_ramp(rows: int, start: int, stop: int) -> np.ndarray:
    """1 up to start - 1, a linear ramp to 0 at stop, 0 above (the v5.1 filters)."""
    return np.concatenate([np.ones(start - 1), np.linspace(1, 0, stop - start + 1), np.zeros(rows - stop)])[:, None]


def highpass_ramp(rows: int, start: int, stop: int) -> np.ndarray:
    return np.concatenate([np.zeros(stop + 1), np.linspace(0, 1, 1 + start - stop), np.ones(rows - start - 2)])[:, None]


def lowpass_steps(spectrum: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start..stop - 1 scaled down in equal steps, rows from stop silenced (the v5 filters)."""
    gain = 1.0
    for row in range(start, stop):
        gain -= 1 / (stop - start)
        spectrum[:, row] *= gain
    spectrum[:, stop:] = 0
    return spectrum


def highpass_steps(spectrum: np.ndarray, start: int, stop: int) -> np.ndarray:
    gain = 1.0
    for row in range(start, stop, -1):
        gain -= 1 / (start - stop)
        spectrum[:, row] *= gain
    spectrum[:, : stop + 1] = 0
    return spectrum


def band_filtered(spectrum: np.ndarray, band: Band, lstm: bool) -> np.ndarray:
    if band.highpass is not None and band.highpass[0] > 0:
        start, stop = band.highpass[0], band.highpass[1] - 1
        spectrum = spectrum * highpass_ramp(spectrum.shape[1], start, stop) if lstm else highpass_steps(
            spectrum, start, stop)
    if band.lowpass is not None:
        start, stop = band.lowpass
        spectrum = spectrum * lowpass_ramp(spectrum.shape[1], start, stop) if lstm else lowpass_steps(
            spectrum, start, stop)
    return spectrum


def band_wave(stacked: np.ndarray, index: int, params: BandParams, lstm: bool) -> np.ndarray:
    band = params.bands[index]
    row = sum(lower.rows for lower in params.bands[:index])
    spectrum = np.zeros((2, band.n_fft // 2 + 1, stacked.shape[2]), np.complex128)
    spectrum[:, band.crop[0]: band.crop[1]] = stacked[:, row: row + band.rows]
    wave = istft(band_filtered(spectrum, band, lstm), band)
    return convert_out(wave, band.conversion) if lstm else stereo_out(wave, params.stereo)


def synthesise(stacked: np.ndarray, params: BandParams, lstm: bool) -> np.ndarray:
    """A stacked spectrogram back to audio at the top band's rate: hop * (frames - 1) samples."""
    wave = band_wave(stacked, 0, params, lstm)
    for index in range(1, len(params.bands)):
        below, band = params.bands[index - 1], params.bands[index]
        wave = resample(wave, below.rate, band.rate, "sinc_fastest")
        wave = wave + band_wave(stacked, index, params, lstm)
    return wave


# The mask


def padding(frames: int, config: VrNetConfig, window: int) -> tuple[int, int, int]:
    """(left, right, kept): the network's offset on the left, enough on the right for whole windows."""
    kept = window - 2 * config.offset or window
    return config.offset, kept - frames % kept + config.offset, kept


def windowed_mask(network: torch.nn.Module, padded: np.ndarray, kept: int, settings: VrSettings) -> np.ndarray:
    offset, device = network.config.offset, next(network.parameters()).device
    windows = (padded.shape[2] - 2 * offset) // kept
    masks = []
    with torch.no_grad():
        for index in range(windows):
            window = padded[None, :, :, index * kept: index * kept + settings.window]
            piece = torch.from_numpy(np.ascontiguousarray(window, np.float32)).to(device)
            mask = network(piece)[..., offset: -offset]
            if mask.shape[3] == 0:
                raise ValueError(f"window {settings.window} is too short for this network")
            masks.append(mask[0].cpu().numpy())
    return np.concatenate(masks, axis=2)


def pass_mask(network: torch.nn.Module, magnitude: np.ndarray, settings: VrSettings, shift: int) -> np.ndarray:
    left, right, kept = padding(magnitude.shape[2], network.config, settings.window)
    padded = np.pad(magnitude, ((0, 0), (0, 0), (left + shift, right + shift)))
    padded /= padded.max()
    return windowed_mask(network, padded, kept, settings)[:, :, shift:]


def predict_mask(network: torch.nn.Module, magnitude: np.ndarray, settings: VrSettings) -> np.ndarray:
    frames = magnitude.shape[2]
    mask = pass_mask(network, magnitude, settings, 0)[:, :, :frames]
    if settings.tta:
        kept = padding(frames, network.config, settings.window)[2]
        mask = (mask + pass_mask(network, magnitude, settings, kept // 2)[:, :, :frames]) * 0.5
    return mask


def aggressive(mask: np.ndarray, params: BandParams, settings: VrSettings) -> np.ndarray:
    """The mask raised to 1 + a / 3 below the first band's top and 1 + a above, a per channel."""
    base = settings.aggression / 100 * 2
    if base == 0:
        return mask
    base = 1 - base if settings.vocals_primary else base
    split = params.split_bin
    for channel, correction in enumerate(params.aggression_correction):
        exponent = base + correction
        mask[channel, :split] = np.power(mask[channel, :split], 1 + exponent / 3)
        mask[channel, split:] = np.power(mask[channel, split:], 1 + exponent)
    return mask


def artefacts_merged(mask: np.ndarray, threshold: float, min_range: int = 64, fade: int = 32) -> np.ndarray:
    """UVR's post-process: runs of more than `min_range` frames whose mask stays above `threshold`
    everywhere are pushed to 1, with `fade`-frame linear ramps at their ends."""
    above = np.where(mask.min(axis=(0, 1)) > threshold)[0]
    if len(above) == 0:
        return mask
    breaks = np.where(np.diff(above) != 1)[0]
    starts, ends = np.insert(above[breaks + 1], 0, above[0]), np.append(above[breaks], above[-1])
    weight = np.zeros_like(mask)
    previous_end = None
    for start, end in zip(starts[ends - starts > min_range], ends[ends - starts > min_range]):
        start = start if previous_end is None or start - previous_end >= fade else previous_end - fade * 2
        if start != 0:
            weight[:, :, start: start + fade] = np.linspace(0, 1, fade)
        else:
            start -= fade
        if end != mask.shape[2]:
            weight[:, :, end - fade: end] = np.linspace(1, 0, fade)
        else:
            end += fade
        weight[:, :, start + fade: end - fade] = 1
        previous_end = end
    return mask + weight * (1 - mask)


def separate(network: torch.nn.Module, mix: np.ndarray, params: BandParams,
             settings: VrSettings) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) audio of a float32 stereo mix at the top band's rate, each
    hop * (frames - 1) samples long; the two spectra sum to the mix's."""
    lstm = network.config.kind == "lstm"
    spectrum = analyse(mix, params, lstm)
    magnitude, phase = np.abs(spectrum), np.angle(spectrum)
    mask = aggressive(predict_mask(network, magnitude, settings), params, settings)
    if settings.post_process:
        mask = artefacts_merged(mask, settings.post_process_threshold)
    mixed = magnitude * np.exp(1.0j * phase)
    return synthesise(mask * mixed, params, lstm), synthesise((1 - mask) * mixed, params, lstm)


class VrSeparator(torch.nn.Module):
    """A mask network with its band split: (batch, 2, samples) at `params.rate` -> (batch, 2 stems, 2, samples).
    Each stem is the procedure's hop * (frames - 1) samples followed by silence up to the input's length."""

    def __init__(self, network: torch.nn.Module, params: BandParams, settings: VrSettings):
        super().__init__()
        self.network, self.params, self.settings = network, params, settings
        self.samplerate, self.audio_channels = params.rate, 2

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        songs = [self._pair(song.float().cpu().numpy()) for song in mix]
        return torch.from_numpy(np.stack(songs)).to(mix.device)

    def _pair(self, song: np.ndarray) -> np.ndarray:
        stems = np.zeros((2, *song.shape), np.float32)
        for index, stem in enumerate(separate(self.network, song, self.params, self.settings)):
            stems[index, :, : stem.shape[1]] = stem[:, : song.shape[1]]
        return stems
