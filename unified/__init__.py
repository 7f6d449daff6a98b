"""unified: one multitask, multimodal encoder-decoder.

    from unified import Model
    Model.generate(task="caption", video="clip.mp4")
"""

__version__ = "0.1.0"

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
