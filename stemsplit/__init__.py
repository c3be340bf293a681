"""stemsplit: split songs into stems with Hybrid Transformer Demucs.

    import stemsplit
    stems, rate = stemsplit.separate("song.mp3")            # one-off
    model = stemsplit.load_model("htdemucs_ft", device="cuda")
    stems, rate = model.separate((samples, 48000))         # many songs, model loaded once
"""

__version__ = "0.1.0"
__all__ = ["separate", "load_model", "Separator", "Separated"]


def __getattr__(name: str):
    # The API needs torch; importing it lazily keeps `stemsplit --help` instant.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'stemsplit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
