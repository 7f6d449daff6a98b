"""Serving a trained model: an OpenAI-compatible HTTP server (`unified serve`), batch prediction over a corpus
(`unified predict`) and a web page to try it (`unified ui`). See `docs/serving.md`.

    from unified import Model
    from unified.serving import ServingConfig, create_app
    app = create_app(Model.from_pretrained("runs/shapes/best"), ServingConfig(model_name="shapes"))

Layers: serving imports api, task_zoo, processing, model, media and errors; nothing below imports serving.
FastAPI and uvicorn come with the `serve` extra (`pip install unified[serve]`).
"""

from unified.serving.engine import Engine, ServingConfig

__all__ = ["Engine", "ServingConfig", "create_app"]


def __getattr__(name: str):
    # the HTTP app needs the `serve` extra; the engine and the chat mapper do not
    if name == "create_app":
        from unified.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'unified.serving' has no attribute {name!r}")
