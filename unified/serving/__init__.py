"""Serving a trained model: an OpenAI-compatible HTTP server (`unified serve`), batch prediction over a corpus
(`unified predict`) and a web page to try it (`unified ui`). See `docs/serving.md`.

    from unified import Model
    from unified.serving import ServingConfig
    from unified.serving.app import create_app        # needs the `serve` extra (FastAPI, uvicorn)
    app = create_app(Model.from_pretrained("runs/shapes/best"), ServingConfig(model_name="shapes"))

Layers: serving imports api, task_zoo, processing, model, media and errors; nothing below imports serving.
The engine, the chat mapper and batch prediction need no extra; `unified.serving.app` needs `serve`
(`pip install unified[serve]`), `unified.serving.ui` needs `ui` and `unified.serving.ray` needs `ray`.
"""

from unified.serving.engine import Engine, ServingConfig

__all__ = ["Engine", "ServingConfig"]
