"""unified: one multitask, multimodal encoder-decoder.

    from unified import Model
    Model.generate(task="caption", video="clip.mp4")
"""

import logging

__version__ = "0.1.0"


class _KernelLibraryNoise(logging.Filter):
    """torchao (the `quant` extra), imported by peft whenever it is installed, logs one warning per CUDA kernel
    library a CPU-only torch cannot load, and torch one per enum torchao registers: lines on every command about
    kernels nothing here uses. Only those records are dropped; every other warning of both libraries stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Failed to load ") and ".so" in message) and "is an Enum subclass" not in message


logging.getLogger("torchao").addFilter(_KernelLibraryNoise())
logging.getLogger("torch.utils._pytree").addFilter(_KernelLibraryNoise())

__all__ = ["Model", "__version__", "export", "merge"]


def __getattr__(name: str):
    # `import unified` stays light; the model stack loads on first use of `unified.Model`.
    if name == "Model":
        from unified.api import Model

        return Model
    if name == "merge":  # saved models merged into one (unified.merging)
        from unified.merging import merge

        return merge
    if name == "export":  # a saved model rewritten for shipping (unified.exporting)
        from unified.exporting import export

        return export
    raise AttributeError(f"module 'unified' has no attribute {name!r}")
