"""unified: one multitask, multimodal encoder-decoder."""

__version__ = "0.1.0"
