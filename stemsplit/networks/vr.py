"""UVR's VR-architecture mask networks (tsurumeso's vocal-remover), inference only.

Both kinds take a magnitude spectrogram, (batch, 2 channels, bins + 1, frames), and give a
sigmoid mask of the same shape. The frequency axis is cut to `bins`, split in a low and a high
half for a first stage, and the halves' outputs are stacked with the input for the stages after
it; the last stage's mask is extended to `bins + 1` rows by repeating its top row.

- "aspp" (UVR's v5 nets, `nets.CascadedASPPNet`): three stages of a U-Net whose bottom is an
  atrous spatial pyramid of 5, 6 or 7 branches (the extra branches share one module), with
  `channels` 16, 32 or 64 in the first encoder; `deep` adds a fifth scale (UVR's 129605 size).
- "lstm" (UVR's v5.1 nets, `nets_new.CascadedNet`): U-Nets whose second decoder also reads a
  bidirectional LSTM over time, `channels` being the net's `nout`, `lstm_units` its `nout_lstm`.

Which kind and shape a checkpoint has is read from its state dict's keys and shapes
(`config_from_state`), never from its file size as UVR does. Module and parameter names follow
UVR's checkpoints, so their state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KINDS = ("aspp", "lstm")


@dataclass(frozen=True)
class VrNetConfig:
    """Shape of a VR mask network."""

    kind: str  # "aspp" or "lstm"
    bins: int  # the model parameters' `bins`: rows the network sees (it masks bins + 1)
    channels: int  # first encoder's channels ("aspp") or the net's nout ("lstm")
    lstm_units: int = 0  # "lstm": the full-band LSTM's outputs (nout_lstm)
    aspp_branches: int = 5  # "aspp": 5, 6 or 7
    deep: bool = False  # "aspp": a fifth encoder scale

    @property
    def offset(self) -> int:
        """Frames cut from each side of a window's mask: the network's receptive margin."""
        return 128 if self.kind == "aspp" else 64


def conv_bn(nin: int, nout: int, kernel: int = 3, stride: int = 1, pad: int | tuple = 1,
            dilation: int | tuple = 1, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(nin, nout, kernel, stride, pad, dilation, bias=False),
                         nn.BatchNorm2d(nout), act())


class ConvBn(nn.Module):
    """A bias-free convolution, batch norm and activation, under the checkpoints' `conv` name."""

    def __init__(self, nin: int, nout: int, kernel: int = 3, stride: int = 1, pad: int | tuple = 1,
                 dilation: int | tuple = 1, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.conv = conv_bn(nin, nout, kernel, stride, pad, dilation, act)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class SeparableConvBn(nn.Module):
    """Depthwise dilated 3x3, pointwise 1x1, batch norm, ReLU."""

    def __init__(self, nin: int, nout: int, dilation: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(nin, nin, 3, 1, dilation, dilation, groups=nin, bias=False),
            nn.Conv2d(nin, nout, 1, bias=False), nn.BatchNorm2d(nout), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def centre_crop(skip: Tensor, like: Tensor) -> Tensor:
    """`skip` cut to `like`'s frames, as many dropped on the left as (rounded down) on the right."""
    extra = skip.shape[3] - like.shape[3]
    if extra < 0:
        raise ValueError("window too short for this network")
    return skip[..., extra // 2: extra // 2 + like.shape[3]]


def upsample_join(x: Tensor, skip: Tensor | None) -> Tensor:
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return x if skip is None else torch.cat([x, centre_crop(skip, x)], dim=1)


class AsppEncoder(nn.Module):
    """Two LeakyReLU convolutions, the second strided; gives the output and the skip."""

    def __init__(self, nin: int, nout: int):
        super().__init__()
        self.conv1 = ConvBn(nin, nout, act=nn.LeakyReLU)
        self.conv2 = ConvBn(nout, nout, stride=2, act=nn.LeakyReLU)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        skip = self.conv1(x)
        return self.conv2(skip), skip


class AsppDecoder(nn.Module):
    def __init__(self, nin: int, nout: int):
        super().__init__()
        self.conv = ConvBn(nin, nout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(upsample_join(x, skip))


class Pyramid(nn.Module):
    """The v5 atrous pyramid: global mean over frequency, 1x1, three (to five) dilated branches."""

    def __init__(self, nin: int, nout: int, branches: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), ConvBn(nin, nin, 1, 1, 0))
        self.conv2 = ConvBn(nin, nin, 1, 1, 0)
        self.conv3 = SeparableConvBn(nin, nin, 4)
        self.conv4 = SeparableConvBn(nin, nin, 8)
        self.conv5 = SeparableConvBn(nin, nin, 16)
        self.extra = [f"conv{index}" for index in range(6, branches + 1)]
        shared = SeparableConvBn(nin, nin, 16) if self.extra else None
        for name in self.extra:
            setattr(self, name, shared)
        self.bottleneck = nn.Sequential(ConvBn(nin * branches, nout, 1, 1, 0), nn.Dropout2d(0.1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(self.conv1(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        branches = [self.conv2, self.conv3, self.conv4, self.conv5, *(getattr(self, n) for n in self.extra)]
        return self.bottleneck(torch.cat([pooled, *(branch(x) for branch in branches)], dim=1))


class AsppUNet(nn.Module):
    """v5's U-Net: four (or five) encoder scales, the pyramid, decoders joined to the skips."""

    def __init__(self, config: VrNetConfig, nin: int, ch: int):
        super().__init__()
        widths = [nin, ch, ch * 2, ch * 4, ch * 8] + ([ch * 16] if config.deep else [])
        self.scales = len(widths) - 1
        for index in range(1, self.scales + 1):
            setattr(self, f"enc{index}", AsppEncoder(widths[index - 1], widths[index]))
            setattr(self, f"dec{index}", AsppDecoder(widths[index] * 3, widths[index]))
        self.aspp = Pyramid(widths[-1], widths[-1] * 2, config.aspp_branches)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for index in range(1, self.scales + 1):
            x, skip = getattr(self, f"enc{index}")(x)
            skips.append(skip)
        x = self.aspp(x)
        for index in range(self.scales, 0, -1):
            x = getattr(self, f"dec{index}")(x, skips[index - 1])
        return x


class AsppNet(nn.Module):
    """v5's cascade: halves, a bridged full band, a second bridged full band, a 1x1 mask head."""

    def __init__(self, config: VrNetConfig):
        super().__init__()
        ch = config.channels
        self.config = config
        self.stg1_low_band_net = AsppUNet(config, 2, ch)
        self.stg1_high_band_net = AsppUNet(config, 2, ch)
        self.stg2_bridge = ConvBn(2 + ch, ch // 2, 1, 1, 0)
        self.stg2_full_band_net = AsppUNet(config, ch // 2, ch)
        self.stg3_bridge = ConvBn(2 + 2 * ch, ch, 1, 1, 0)
        self.stg3_full_band_net = AsppUNet(config, ch, 2 * ch)
        self.out = nn.Conv2d(2 * ch, 2, 1, bias=False)
        self.aux1_out = nn.Conv2d(ch, 2, 1, bias=False)  # training heads: kept so checkpoints load strict
        self.aux2_out = nn.Conv2d(ch, 2, 1, bias=False)

    def forward(self, magnitude: Tensor) -> Tensor:
        x = magnitude[:, :, : self.config.bins]
        half = x.shape[2] // 2
        aux1 = torch.cat([self.stg1_low_band_net(x[:, :, :half]), self.stg1_high_band_net(x[:, :, half:])], dim=2)
        aux2 = self.stg2_full_band_net(self.stg2_bridge(torch.cat([x, aux1], dim=1)))
        full = self.stg3_full_band_net(self.stg3_bridge(torch.cat([x, aux1, aux2], dim=1)))
        return full_height(torch.sigmoid(self.out(full)), self.config.bins + 1)


def full_height(mask: Tensor, rows: int) -> Tensor:
    return F.pad(mask, (0, 0, 0, rows - mask.shape[2]), mode="replicate")


class LstmEncoder(nn.Module):
    """v5.1's encoder: the strided convolution first, no skip output."""

    def __init__(self, nin: int, nout: int):
        super().__init__()
        self.conv1 = ConvBn(nin, nout, stride=2, act=nn.LeakyReLU)
        self.conv2 = ConvBn(nout, nout, act=nn.LeakyReLU)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class LstmDecoder(nn.Module):
    def __init__(self, nin: int, nout: int):
        super().__init__()
        self.conv1 = ConvBn(nin, nout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv1(upsample_join(x, skip))


class DensePyramid(nn.Module):
    """v5.1's pyramid: plain (not separable) dilated branches, dilation (2k, k) in (frequency, time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.AdaptiveAvgPool2d((1, None)), ConvBn(channels, channels, 1, 1, 0))
        self.conv2 = ConvBn(channels, channels, 1, 1, 0)
        self.conv3 = ConvBn(channels, channels, 3, 1, (4, 2), (4, 2))
        self.conv4 = ConvBn(channels, channels, 3, 1, (8, 4), (8, 4))
        self.conv5 = ConvBn(channels, channels, 3, 1, (12, 6), (12, 6))
        self.bottleneck = ConvBn(channels * 5, channels, 1, 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.interpolate(self.conv1(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        branches = (self.conv2, self.conv3, self.conv4, self.conv5)
        return self.bottleneck(torch.cat([pooled, *(branch(x) for branch in branches)], dim=1))


class TimeLstm(nn.Module):
    """A 1-channel projection, a bidirectional LSTM over frames, a dense map back to the bins."""

    def __init__(self, nin: int, bins: int, units: int):
        super().__init__()
        self.conv = ConvBn(nin, 1, 1, 1, 0)
        self.lstm = nn.LSTM(input_size=bins, hidden_size=units // 2, bidirectional=True)
        self.dense = nn.Sequential(nn.Linear(units, bins), nn.BatchNorm1d(bins), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        batch, _, bins, frames = x.shape
        sequence, _ = self.lstm(self.conv(x)[:, 0].permute(2, 0, 1))
        dense = self.dense(sequence.reshape(frames * batch, -1))
        return dense.reshape(frames, batch, 1, bins).permute(1, 2, 3, 0)


class LstmUNet(nn.Module):
    """v5.1's U-Net: a full-resolution convolution, four strided encoders, the pyramid, and
    decoders, the last of which also reads the LSTM's one extra channel."""

    def __init__(self, nin: int, nout: int, lstm_bins: int, lstm_units: int):
        super().__init__()
        self.enc1 = ConvBn(nin, nout)
        self.enc2 = LstmEncoder(nout, nout * 2)
        self.enc3 = LstmEncoder(nout * 2, nout * 4)
        self.enc4 = LstmEncoder(nout * 4, nout * 6)
        self.enc5 = LstmEncoder(nout * 6, nout * 8)
        self.aspp = DensePyramid(nout * 8)
        self.dec4 = LstmDecoder(nout * 14, nout * 6)
        self.dec3 = LstmDecoder(nout * 10, nout * 4)
        self.dec2 = LstmDecoder(nout * 6, nout * 2)
        self.lstm_dec2 = TimeLstm(nout * 2, lstm_bins, lstm_units)
        self.dec1 = LstmDecoder(nout * 3 + 1, nout)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        x = self.dec2(self.dec3(self.dec4(self.aspp(self.enc5(e4)), e4), e3), e2)
        return self.dec1(torch.cat([x, self.lstm_dec2(x)], dim=1), e1)


class LstmNet(nn.Module):
    """v5.1's cascade: each half through two stages, then the full band with both stages' outputs."""

    def __init__(self, config: VrNetConfig):
        super().__init__()
        nout, units, half_bins = config.channels, config.lstm_units, config.bins // 4
        self.config = config
        self.stg1_low_band_net = nn.Sequential(LstmUNet(2, nout // 2, half_bins, units),
                                               ConvBn(nout // 2, nout // 4, 1, 1, 0))
        self.stg1_high_band_net = LstmUNet(2, nout // 4, half_bins, units // 2)
        self.stg2_low_band_net = nn.Sequential(LstmUNet(nout // 4 + 2, nout, half_bins, units),
                                               ConvBn(nout, nout // 2, 1, 1, 0))
        self.stg2_high_band_net = LstmUNet(nout // 4 + 2, nout // 2, half_bins, units // 2)
        self.stg3_full_band_net = LstmUNet(3 * nout // 4 + 2, nout, config.bins // 2, units)
        self.out = nn.Conv2d(nout, 2, 1, bias=False)
        self.aux_out = nn.Conv2d(3 * nout // 4, 2, 1, bias=False)  # training head: kept so checkpoints load strict

    def forward(self, magnitude: Tensor) -> Tensor:
        x = magnitude[:, :, : self.config.bins]
        half = x.shape[2] // 2
        low, high = x[:, :, :half], x[:, :, half:]
        low1, high1 = self.stg1_low_band_net(low), self.stg1_high_band_net(high)
        low2 = self.stg2_low_band_net(torch.cat([low, low1], dim=1))
        high2 = self.stg2_high_band_net(torch.cat([high, high1], dim=1))
        stage3 = torch.cat([x, torch.cat([low1, high1], dim=2), torch.cat([low2, high2], dim=2)], dim=1)
        return full_height(torch.sigmoid(self.out(self.stg3_full_band_net(stage3))), self.config.bins + 1)


def build(config: VrNetConfig) -> nn.Module:
    if config.kind not in KINDS:
        raise ValueError(f"unknown VR network kind {config.kind!r}; known: {', '.join(KINDS)}")
    return AsppNet(config) if config.kind == "aspp" else LstmNet(config)


def config_from_state(state: Mapping[str, Tensor], bins: int) -> VrNetConfig:
    """The network a UVR VR state dict holds, read from its keys and shapes."""
    if "stg1_low_band_net.0.enc1.conv.0.weight" in state:
        nout = state["stg3_full_band_net.enc1.conv.0.weight"].shape[0]
        units = state["stg3_full_band_net.lstm_dec2.lstm.weight_hh_l0"].shape[1] * 2
        return VrNetConfig("lstm", bins, nout, lstm_units=units)
    if "stg1_low_band_net.enc1.conv1.conv.0.weight" in state:
        channels = state["stg1_low_band_net.enc1.conv1.conv.0.weight"].shape[0]
        branches = 5 + sum(f"stg1_low_band_net.aspp.conv{i}.conv.0.weight" in state for i in (6, 7))
        deep = "stg1_low_band_net.enc5.conv1.conv.0.weight" in state
        return VrNetConfig("aspp", bins, channels, aspp_branches=branches, deep=deep)
    raise ValueError("not a VR-architecture state dict (no stg1_low_band_net encoder)")
