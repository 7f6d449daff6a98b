"""OpenAI's wire format, as this server speaks it: which request fields it reads, refuses or passes to the task, and
the response, chunk, embedding and error objects.

    chat request   model, messages, max_tokens | max_completion_tokens, stream, stream_options, temperature (0),
                   top_p (1), n (1), seed, user; anything OpenAI defines that changes the answer (tools, stop,
                   logprobs, penalties...) is refused unless it is at its neutral value; every other field is an
                   extension: `task` and the task's own fields (options, phrase, labels, inputs...)
    error          {"error": {"message", "type", "param", "code"}} with a 4xx/5xx status

    >>> ApiError(404, "no such model", param="model", code="model_not_found").body()
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from unified.data.sources import UploadTooLarge
from unified.errors import InputError, MediaDecodeError

CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options",
               "temperature", "top_p", "n", "seed", "user", "task"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "user", "task"}
# OpenAI fields this server does not carry out, with the value at which they change nothing
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "stop": None, "tools": None,
           "tool_choice": None, "functions": None, "function_call": None, "logit_bias": None, "top_logprobs": None,
           "response_format": None, "parallel_tool_calls": None, "modalities": None, "audio": None,
           "prediction": None, "reasoning_effort": None, "service_tier": None, "store": None, "metadata": None,
           "web_search_options": None, "dimensions": None, "verbosity": None}


class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def refuse_unsupported(body: Mapping[str, Any], read: set[str]) -> None:
    """Raise for an OpenAI field the server would otherwise ignore (sampling, tools, stop sequences...)."""
    for key, neutral in NEUTRAL.items():
        if key in read or key not in body:
            continue
        value = body[key]
        if value != neutral and not (value == {"type": "text"} and key == "response_format"):
            raise ApiError(400, f"{key}={value!r} is not supported by this server (its answers are greedy, typed "
                           f"by the task's grammar); leave it out", param=key, code="unsupported_parameter")


def chat_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI fields of a chat request this server carries out, checked."""
    temperature, top_p, n = body.get("temperature"), body.get("top_p"), body.get("n")
    if temperature not in (None, 0, 0.0):
        raise ApiError(400, f"temperature={temperature!r}: this server decodes greedily (temperature 0 or absent); "
                       "sampling is not supported", param="temperature", code="unsupported_parameter")
    if top_p not in (None, 1, 1.0):
        raise ApiError(400, f"top_p={top_p!r}: sampling is not supported (greedy decoding)", param="top_p",
                       code="unsupported_parameter")
    if n not in (None, 1):
        raise ApiError(400, f"n={n!r}: one greedy answer per request (n=1)", param="n", code="unsupported_parameter")
    limits = {k: body.get(k) for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None}
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, f"{key}={value!r}: expected a positive whole number of tokens", param=key)
    if len(set(limits.values())) > 1:
        raise ApiError(400, f"max_tokens and max_completion_tokens disagree: {limits}", param="max_tokens")
    stream = body.get("stream", False)
    if stream not in (None, True, False):
        raise ApiError(400, f"stream={stream!r}: expected true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping) or set(options) - {"include_usage"}:
        raise ApiError(400, f"stream_options={options!r}: only include_usage is supported", param="stream_options")
    return {"max_tokens": next(iter(limits.values()), None), "stream": bool(stream),
            "include_usage": bool(options.get("include_usage"))}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def message(answer: Any) -> dict[str, Any]:
    """The assistant message: text content, and (extensions) the typed answer and its score."""
    return {"role": "assistant", "content": answer.text, "answer": answer.json, "score": finite(answer.score)}


def finish_reason(answer: Any) -> str:
    return "stop" if answer.stopped else "length"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(ident: str, model: str, task: str, answer: Any) -> dict[str, Any]:
    return {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model, "task": task,
            "choices": [{"index": 0, "message": message(answer), "finish_reason": finish_reason(answer),
                         "logprobs": None}],
            "usage": usage(answer.prompt_tokens, answer.answer_tokens)}


def chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None = None, *,
          with_choice: bool = True, usage_: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": model, "choices": []}
    if with_choice:
        out["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    if usage_ is not None:
        out["usage"] = usage_
    return out


def finite(value: float | None) -> float | None:
    """JSON has no infinity: a -inf log-probability (a token the model gave no chance) is sent as null."""
    return value if value is None or math.isfinite(value) else None


def input_error(err: InputError) -> ApiError:
    """A library error -> 400 naming the field (`param`); 413 for an upload over the limit."""
    if isinstance(err, UploadTooLarge):
        return ApiError(413, str(err), param=err.what, code="upload_too_large")
    code = "media_decode_error" if isinstance(err, MediaDecodeError) else "invalid_value"
    # `check_fields` names "<task> keyword" and the field as the value: the field is the param
    param = str(err.value) if err.what.endswith(" keyword") else err.what
    return ApiError(400, str(err), param=param, code=code)
