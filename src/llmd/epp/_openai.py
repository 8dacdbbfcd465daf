"""Parse an OpenAI completions / chat body into an InferenceRequest (once, under a size limit)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from llmd.epp.request import InferenceRequest
from llmd.errors import BadRequestError

OBJECTIVE_HEADER = "x-gateway-inference-objective"


def parse_request(
    request_id: str, path: str, headers: Mapping[str, str], body: bytes,
    objectives: Mapping[str, int],
) -> InferenceRequest:
    """Raise BadRequestError (400) for a body that is not an OpenAI request."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        # The stdlib parser recurses per nesting level; Python's recursion limit bounds it.
        raise BadRequestError("request body nests JSON too deeply (limit: about "
                              f"{sys.getrecursionlimit()} levels)") from None
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' is required and must be a string", param="model")
    _check_unicode(model, "model")
    prompt = _prompt(data)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean", param="stream")
    salt = data.get("cache_salt", "")
    if isinstance(salt, str):
        _check_unicode(salt, "cache_salt")
    objective = headers.get(OBJECTIVE_HEADER)
    return InferenceRequest(
        request_id=request_id,
        model=model,
        prompt=prompt,
        stream=stream,
        cache_salt=salt if isinstance(salt, str) else "",
        path=path,
        headers=headers,
        objective=objective,
        priority=objectives.get(objective, 0) if objective else 0,
    )


def headers_only_request(
    request_id: str, path: str, headers: Mapping[str, str], objectives: Mapping[str, int]
) -> InferenceRequest:
    """A request without a body (e.g. GET /v1/models)."""
    objective = headers.get(OBJECTIVE_HEADER)
    return InferenceRequest(request_id=request_id, path=path, headers=headers,
                            objective=objective,
                            priority=objectives.get(objective, 0) if objective else 0)


def _prompt(data: dict[str, Any]) -> str:
    if "messages" in data:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("'messages' must be a non-empty list", param="messages")
        # llm-d hashes the JSON of the messages, so the role markup is part of the prefix.
        return _check_unicode(_compact(messages), "messages")
    if "prompt" in data:
        prompt = data["prompt"]
        if isinstance(prompt, str):
            return _check_unicode(prompt, "prompt")
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            return _check_unicode("".join(prompt), "prompt")
        if isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
            return json.dumps(prompt, separators=(",", ":"))
        raise BadRequestError("'prompt' must be a string, a list of strings or token ids",
                              param="prompt")
    if "input" in data:  # embeddings / responses
        return _check_unicode(_compact(data["input"]), "input")
    raise BadRequestError("request needs 'messages' (chat) or 'prompt' (completions)")


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:  # parsed, but too deep to serialise again at this stack depth
        raise BadRequestError("request body nests JSON too deeply") from None


def _check_unicode(text: str, param: str) -> str:
    """`text` unchanged, or a 400: JSON may escape a lone UTF-16 surrogate (`"\\ud800"`),
    which Python keeps in a str but no UTF-8 encoder (prefix hashing, tokenizers) accepts;
    vLLM answers such a prompt with a 400 too."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise BadRequestError(f"'{param}' is not valid Unicode: it contains a lone UTF-16 "
                              f"surrogate (U+{ord(text[exc.start]):04X})", param=param) from None
    return text
