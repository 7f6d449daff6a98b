"""The HTTP app: routes that parse, validate and format; the work is the `Engine`'s.

    POST /v1/chat/completions   OpenAI chat (content parts text / image_url / video_url / audio_url / input_audio),
                                `task` and the task's fields as extension fields; stream: server-sent events
    POST /v1/embeddings         OpenAI embeddings for an embedding task: strings, or one media part per input
    GET  /v1/models             the model, its tasks and adapters
    GET  /health, /metrics      liveness with queue depths; Prometheus text

Every error is OpenAI's error object, from one place (`_error`): a library `InputError` is 400 naming the field,
an upload over the limit 413, an unknown model 404, a missing or wrong key 401, a request over `--timeout` 504.

    >>> app = create_app(Model.from_pretrained("runs/shapes/best"), ServingConfig(model_name="shapes"))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from unified.data.chat import chat_row
from unified.errors import ConfigError, InputError
from unified.serving import protocol
from unified.serving.engine import Engine, ServingConfig, fields_without
from unified.serving.protocol import ApiError

log = logging.getLogger("unified.serving")
JSON_SLACK = 2**20  # bytes of JSON allowed around the base64 media in a request body
_process_engine: list[Engine] = []  # a Ray Serve replica's engine (one process per replica; `use_engine`)


def use_engine(engine: Engine) -> None:
    """Make `engine` the one this process's routes use when their app carries none (a Ray Serve replica, whose
    copy of the app is not the one its constructor can reach)."""
    _process_engine[:] = [engine]


def engine_of(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None and _process_engine:
        engine = _process_engine[0]
    if engine is None:
        raise ApiError(503, "the model is still loading", code="not_ready")
    return engine


def create_app(model: Any, config: ServingConfig | None = None, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app serving `model` (a `unified.Model`) with `config`."""
    engine = engine or Engine(model, config or ServingConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.batcher.close()
        engine.close()

    app = FastAPI(title=f"unified: {engine.config.model_name}", lifespan=lifespan)
    app.state.engine = engine
    install_routes(app)
    return app


def install_routes(app: FastAPI) -> None:
    """Routes and error handlers on `app`; they find the engine at `request.app.state.engine`, else the one
    `use_engine` set for this process."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        try:
            engine = engine_of(request)
        except ApiError as err:
            return _error(err)
        if engine.config.api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {engine.config.api_key}".encode()):
                response = _error(ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                           code="invalid_api_key"))
                _count(request, engine, "-", response.status_code)
                return response
        response = await call_next(request)
        response.headers["x-unified-replica"] = engine.config.replica
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.exception("unexpected error answering %s", request.url.path)
        return _error(ApiError(500, f"internal error ({type(exc).__name__}); the server is still up",
                               code="internal_error"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        engine = engine_of(request)
        started, task_name = time.perf_counter(), "-"
        try:
            body = await _json_body(request, engine)
            task_name = _label(engine, body)
            settings = _chat_request(engine, body)
            task = engine.task(body.get("task"))
            fields = fields_without(body, protocol.CHAT_FIELDS | set(protocol.NEUTRAL))
            def build():
                return chat_row(task, body.get("messages"), fields, engine.policy).row
            ident = protocol.completion_id()
            if settings["stream"]:
                return await _stream(engine, task, build, settings, ident, started)
            answer = await asyncio.wait_for(engine.answer(task, build, max_tokens=settings["max_tokens"]),
                                            engine.config.timeout)
            _tokens(engine, task.name, answer)
            response = JSONResponse(protocol.completion(ident, engine.config.model_name, task.name, answer))
        except Exception as exc:  # noqa: BLE001  (every failure becomes OpenAI's error object)
            response = _error(_as_api_error(exc, engine))
        _count(request, engine, task_name, response.status_code, started)
        return response

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        engine = engine_of(request)
        started, task_name = time.perf_counter(), "-"
        try:
            body = await _json_body(request, engine)
            task_name = _label(engine, body)
            _check_model(engine, body)
            protocol.refuse_unsupported(body, protocol.EMBEDDING_FIELDS)
            extra = sorted(set(body) - protocol.EMBEDDING_FIELDS - set(protocol.NEUTRAL))
            if extra:
                raise ApiError(400, f"unknown field(s) {extra} for /v1/embeddings", param=extra[0])
            task = engine.embedding_task(body.get("task"))
            task_name = task.name
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise ApiError(400, f"encoding_format={encoding!r}: expected float or base64", param="encoding_format")
            inputs = _embedding_inputs(body.get("input"))
            jobs = [_embed_one(engine, task, item, f"input[{i}]") for i, item in enumerate(inputs)]
            answers = await asyncio.wait_for(asyncio.gather(*jobs), engine.config.timeout)
            data = [{"object": "embedding", "index": i, "embedding": _vector(a.value, encoding)}
                    for i, a in enumerate(answers)]
            prompt = sum(a.prompt_tokens for a in answers)
            response = JSONResponse({"object": "list", "data": data, "model": engine.config.model_name,
                                     "usage": {"prompt_tokens": prompt, "total_tokens": prompt}})
        except Exception as exc:  # noqa: BLE001
            response = _error(_as_api_error(exc, engine))
        _count(request, engine, task_name, response.status_code, started, endpoint="embeddings")
        return response

    @app.get("/v1/models")
    async def models(request: Request):
        engine = engine_of(request)
        return {"object": "list", "data": [_model_card(engine)]}

    @app.get("/v1/models/{name}")
    async def model(request: Request, name: str):
        engine = engine_of(request)
        _check_model(engine, {"model": name})
        return _model_card(engine)

    @app.get("/health")
    async def health(request: Request):
        engine = engine_of(request)
        depth = {"/".join(str(k) for k in key): n for key, n in engine.batcher.depth().items()}
        return {"status": "ok", "model": engine.config.model_name, "replica": engine.config.replica,
                "queues": depth}

    @app.get("/metrics")
    async def metrics(request: Request):
        engine = engine_of(request)
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4")


def run_server(model: Any, config: ServingConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `model` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model, config), host=host, port=port, log_level="warning")


# ---------------------------------------------------------------------------------------------- requests
async def _json_body(request: Request, engine: Engine) -> dict[str, Any]:
    """The request's JSON object, read up to the upload limit (413 past it)."""
    limit = engine.policy.max_bytes * 4 // 3 + JSON_SLACK
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared) / 2**20:.1f} MiB is over this server's limit "
                       f"({engine.config.max_upload_mb:g} MiB of media, base64 and JSON around it)",
                       code="upload_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over this server's limit ({engine.config.max_upload_mb:g} MiB of "
                           "media)", code="upload_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _label(engine: Engine, body: Mapping[str, Any]) -> str:
    """The task as a metrics label: a task of the model, else "-" (a label per unknown name would let clients grow
    the metrics without bound)."""
    name = body.get("task")
    return name if isinstance(name, str) and name in engine.tasks else "-"


def _check_model(engine: Engine, body: Mapping[str, Any]) -> None:
    name = body.get("model")
    if name is None:
        raise ApiError(400, f"model is required (this server serves {engine.config.model_name!r})", param="model")
    if name != engine.config.model_name:
        raise ApiError(404, f"model {name!r} does not exist here; this server serves {engine.config.model_name!r} "
                       "(its tasks are chosen with the field `task`)", param="model", code="model_not_found")


def _chat_request(engine: Engine, body: Mapping[str, Any]) -> dict[str, Any]:
    _check_model(engine, body)
    if "messages" not in body:
        raise ApiError(400, "messages is required", param="messages")
    protocol.refuse_unsupported(body, protocol.CHAT_FIELDS)
    return protocol.chat_settings(body)


def _embedding_inputs(given: Any) -> list[Any]:
    if isinstance(given, (str, Mapping)):
        given = [given]
    if not isinstance(given, list) or not given:
        raise ApiError(400, "input: expected a string, a media part, or a non-empty list of them", param="input")
    for i, item in enumerate(given):
        if not isinstance(item, (str, Mapping)):
            raise ApiError(400, f"input[{i}]: expected a string or one media part ({{type: video_url, video_url: "
                           "{url}}}...); token arrays are not supported", param=f"input[{i}]")
    return given


async def _embed_one(engine: Engine, task: Any, item: Any, where: str):
    if isinstance(item, str):
        field = task.message_field
        return await engine.answer(task, lambda: {field: item}, kind="embed_text")

    def build() -> dict[str, Any]:
        row = chat_row(task, [{"role": "user", "content": [item]}], {}, engine.policy).row
        if not any(m in row for m in ("image", "video", "audio")):
            raise InputError(where, item, "expected one video_url, image_url, audio_url or input_audio part")
        return row

    return await engine.answer(task, build, kind="embed_media")


def _vector(value: Any, encoding: str) -> Any:
    vector = np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=np.float32)
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()


def _model_card(engine: Engine) -> dict[str, Any]:
    return {"id": engine.config.model_name, "object": "model", "created": 0, "owned_by": "unified",
            **engine.describe()}


# ---------------------------------------------------------------------------------------------- streaming
async def _stream(engine: Engine, task: Any, build, settings: dict[str, Any], ident: str, started: float):
    """Server-sent events: text as it is written (a free-text task), else the typed answer as one chunk. The row
    is built and checked before the first byte, so a bad request still gets its 4xx."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    streams_text = task.grammar == "text"
    on_text = (lambda text: loop.call_soon_threadsafe(queue.put_nowait, text)) if streams_text else None
    job = asyncio.ensure_future(engine.answer(task, build, max_tokens=settings["max_tokens"], on_text=on_text))
    # wait until the row is built (an error there is an ordinary 4xx), or the first text arrives
    first = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({job, first}, timeout=engine.config.timeout, return_when=asyncio.FIRST_COMPLETED)
    if not done:
        job.cancel()
        first.cancel()
        raise TimeoutError
    if job in done and job.exception() is not None:
        first.cancel()
        raise job.exception()
    name = engine.config.model_name

    async def events() -> AsyncIterator[str]:
        yield _sse(protocol.chunk(ident, name, {"role": "assistant", "content": ""}))
        pending_first = first
        deadline = started + engine.config.timeout
        try:
            while True:
                getter = pending_first or asyncio.ensure_future(queue.get())
                pending_first = None
                done, _ = await asyncio.wait({job, getter}, timeout=max(0.0, deadline - time.perf_counter()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield _sse(protocol.chunk(ident, name, {"content": getter.result()}))
                    continue
                getter.cancel()
                if job not in done:
                    raise TimeoutError
                while not queue.empty():  # text that arrived with the end
                    yield _sse(protocol.chunk(ident, name, {"content": queue.get_nowait()}))
                answer = job.result()
                last = {"answer": answer.json, "score": protocol.finite(answer.score)}
                if not streams_text:
                    last["content"] = answer.text
                yield _sse(protocol.chunk(ident, name, last, protocol.finish_reason(answer)))
                if settings["include_usage"]:
                    yield _sse(protocol.chunk(ident, name, {}, with_choice=False,
                                              usage_=protocol.usage(answer.prompt_tokens, answer.answer_tokens)))
                _tokens(engine, task.name, answer)
                break
        except Exception as exc:  # noqa: BLE001  (after the first byte the status is sent: the error is an event)
            job.cancel()
            yield _sse(_as_api_error(exc, engine).body())
        yield "data: [DONE]\n\n"
        engine.metrics.latency.observe(time.perf_counter() - started, endpoint="chat", task=task.name)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _sse(obj: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


# ---------------------------------------------------------------------------------------------- errors and counts
def _as_api_error(exc: BaseException, engine: Engine) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        return protocol.input_error(exc)
    if isinstance(exc, ConfigError):
        return ApiError(400, str(exc), param=exc.field, code="invalid_value")
    if isinstance(exc, asyncio.TimeoutError):
        return ApiError(504, f"no answer within this server's --timeout of {engine.config.timeout:g} s",
                        code="timeout", type="timeout_error")
    log.error("unexpected error answering a request", exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__}: {exc}); the server is still up",
                    code="internal_error")


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _count(request: Request, engine: Engine, task: str, status: int, started: float | None = None,
           endpoint: str = "chat") -> None:
    if request.url.path.endswith("/embeddings"):
        endpoint = "embeddings"
    engine.metrics.requests.inc(endpoint=endpoint, task=task, status=str(status))
    if started is not None and status < 400:
        engine.metrics.latency.observe(time.perf_counter() - started, endpoint=endpoint, task=task)


def _tokens(engine: Engine, task: str, answer: Any) -> None:
    engine.metrics.tokens.inc(answer.prompt_tokens, task=task, kind="prompt")
    engine.metrics.tokens.inc(answer.answer_tokens, task=task, kind="completion")
