"""Constructor arguments of the Demucs v3 generation's networks (hdemucs_mmi, mdx, mdx_extra).

The weight files and their Hub sidecars cannot be reached here, so the arguments are derived
from what demucs 4.1 and its repository state:

- demucs/remote/*.yaml name the members: mdx = 0d19c1c6, 7ecf8ec1 (time-domain Demucs, given
  only drums/bass and drums/other/vocals weights), c511e2ab, 7d865c68 (Hybrid Demucs);
  mdx_extra = e51eebcc, a1d90b5c, 5d2d6c55, cfa93e08 (Hybrid Demucs); hdemucs_mmi = 75fc33f5.
  Every one of those bags sets `segment: 44`.
- demucs/train.py builds a network as `klass(sources, audio_channels, samplerate,
  segment=4 * dset.segment, **cfg[model])`, and conf/config.yaml gives the `hdemucs:` and
  `demucs:` sections used here. What the grids overrode for these exact signatures is not in
  the package (grids/mdx.py and mdx_extra.py look them up by signature), so those are the
  defaults; grids/repro.py's reproduction of the mdx bag sets `demucs.normalize: true` for its
  time-domain members, which is taken here.
- `hybrid_old` replicates a padding bug "some models trained for MDX had", and `cac=False` with
  Wiener filtering is the other output the constructor offers: both are tested at full size, so
  whichever the MDX hybrids use is covered.
"""

from __future__ import annotations

SOURCES = ["drums", "bass", "other", "vocals"]

HDEMUCS = {
    "sources": SOURCES, "audio_channels": 2, "samplerate": 44100, "segment": 44,
    "channels": 48, "channels_time": None, "growth": 2, "nfft": 4096, "wiener_iters": 0, "end_iters": 0,
    "wiener_residual": False, "cac": True, "depth": 6, "rewrite": True, "hybrid": True, "hybrid_old": False,
    "multi_freqs": [], "multi_freqs_depth": 3, "freq_emb": 0.2, "emb_scale": 10, "emb_smooth": True,
    "kernel_size": 8, "stride": 4, "time_stride": 2, "context": 1, "context_enc": 0, "norm_starts": 4,
    "norm_groups": 4, "dconv_mode": 1, "dconv_depth": 2, "dconv_comp": 4, "dconv_attn": 4, "dconv_lstm": 4,
    "dconv_init": 1e-3, "rescale": 0.1,
}

DEMUCS = {
    "sources": SOURCES, "audio_channels": 2, "samplerate": 44100, "segment": 44,
    "channels": 64, "growth": 2, "depth": 6, "rewrite": True, "lstm_layers": 0, "kernel_size": 8, "stride": 4,
    "context": 1, "gelu": True, "glu": True, "norm_groups": 4, "norm_starts": 4, "dconv_depth": 2,
    "dconv_mode": 1, "dconv_comp": 4, "dconv_attn": 4, "dconv_lstm": 4, "dconv_init": 1e-4, "resample": True,
    "normalize": True, "rescale": 0.1,
}

RELEASED_HDEMUCS = {
    "hdemucs_mmi": HDEMUCS,
    "mdx_hybrid_old": {**HDEMUCS, "hybrid_old": True},
    "mdx_magnitude_wiener": {**HDEMUCS, "cac": False, "wiener_iters": 1, "end_iters": 1},
}

# Every layer kind of the released shape (six layers: four along frequency, the merge, one
# after it; BLSTM and local attention in the deepest two) at a few channels.
SMALL_HDEMUCS = {**HDEMUCS, "channels": 8}
SMALL_DEMUCS = {**DEMUCS, "channels": 4, "depth": 5, "dconv_attn": 3, "dconv_lstm": 3}
