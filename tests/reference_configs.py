"""Constructor arguments of the official HT Demucs networks, and a tiny one for fast tests.

The weights themselves cannot be downloaded here. Sources for the values:

- htdemucs (955717e8): the `kwargs` stored in the official checkpoint, as dumped by a
  public port (the same dict is hard-coded, "verified against pkg['kwargs']", in
  several public re-implementations).
- htdemucs_ft (f7e0c4bc, d12395a8, 92cfc3b6, 04573f0d): fine-tuned per stem from
  955717e8 (demucs/grids/mmi_ft.py continues from that signature), so the architecture
  is the same. sevagh/demucs.cpp loads all four into the same `demucs_model` struct as
  htdemucs and runs them with the same 7.8 s segment (cli-apps/demucs_ft.cpp,
  src/model.hpp). Their checkpoints are 640 bytes smaller than 955717e8's (84141271
  vs 84141911 bytes), which is pickle metadata, not tensors: both hold
  41,984,456 parameters in float16 (83,968,912 bytes). The fine-tuning grid also sets
  t_weight_decay=0.05, so the stored kwargs may say so; it only matters for training.
- htdemucs_6s (5c90dfd2): sevagh/demucs.cpp src/model.hpp gives the 6-source model the
  same encoder/decoder shapes but a transformer of width 384 (= 48 * 2**3) with no
  channel_upsampler/downsampler, i.e. bottom_channels=0, and the same 7.8 s segment.
  The file size agrees: 27,414,996 parameters in float16 are 54,829,992 bytes, against
  54,996,327 for the checkpoint; with bottom_channels=512 it would exceed 83 MB.
"""

from __future__ import annotations

from fractions import Fraction

_HTDEMUCS = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "bottom_channels": 512,
    "cac": True,
    "channels": 48,
    "channels_time": None,
    "context": 1,
    "context_enc": 0,
    "dconv_comp": 8,
    "dconv_depth": 2,
    "dconv_init": 0.001,
    "dconv_mode": 3,
    "depth": 4,
    "emb_scale": 10,
    "emb_smooth": True,
    "end_iters": 0,
    "freq_emb": 0.2,
    "growth": 2,
    "kernel_size": 8,
    "multi_freqs": [],
    "multi_freqs_depth": 3,
    "nfft": 4096,
    "norm_groups": 4,
    "norm_starts": 4,
    "rescale": 0.1,
    "rewrite": True,
    "samplerate": 44100,
    "segment": Fraction(39, 5),
    "stride": 4,
    "t_auto_sparsity": False,
    "t_cape_augment": True,
    "t_cape_glob_loc_scale": [5000.0, 1.0, 1.4],
    "t_cape_mean_normalize": True,
    "t_cross_first": False,
    "t_dropout": 0.02,
    "t_emb": "sin",
    "t_gelu": True,
    "t_global_window": 100,
    "t_group_norm": False,
    "t_heads": 8,
    "t_hidden_scale": 4.0,
    "t_layer_scale": True,
    "t_layers": 5,
    "t_lr": None,
    "t_mask_random_seed": 42,
    "t_mask_type": "diag",
    "t_max_period": 10000.0,
    "t_max_positions": 10000,
    "t_norm_first": True,
    "t_norm_in": True,
    "t_norm_in_group": False,
    "t_norm_out": True,
    "t_sin_random_shift": 0,
    "t_sparse_attn_window": 400,
    "t_sparse_cross_attn": False,
    "t_sparse_self_attn": False,
    "t_sparsity": 0.95,
    "t_weight_decay": 0.0,
    "t_weight_pos_embed": 1.0,
    "time_stride": 2,
    "wiener_iters": 0,
    "wiener_residual": False,
}

PRETRAINED_KWARGS: dict[str, dict] = {
    "htdemucs": _HTDEMUCS,
    "htdemucs_ft": _HTDEMUCS,
    "htdemucs_6s": {
        **_HTDEMUCS,
        "sources": ["drums", "bass", "other", "vocals", "guitar", "piano"],
        "bottom_channels": 0,
    },
}

# Same structure as htdemucs (both branches, DConv everywhere, frequency embedding,
# bottom channels, self and cross attention) but tiny: a 1 s segment runs in milliseconds.
SMALL_KWARGS: dict = {
    **_HTDEMUCS,
    "channels": 8,
    "depth": 3,
    "nfft": 512,
    "dconv_comp": 4,
    "bottom_channels": 24,
    "t_layers": 2,
    "t_heads": 2,
    "segment": Fraction(1),
}
