"""stemsplit: split songs into stems with Hybrid Transformer Demucs."""

__version__ = "0.1.0"
