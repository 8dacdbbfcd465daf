"""Parse an OpenAI completions / chat body into an InferenceRequest (once, under a size limit)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmd._json import decode_json
from llmd.epp.request import InferenceRequest
from llmd.errors import BadRequestError

OBJECTIVE_HEADERS = ("x-llm-d-inference-objective", "x-gateway-inference-objective")
"""llm-d v1's name for the InferenceObjective header first, then GIE's (both are read)."""


def _objective(headers: Mapping[str, str]) -> str | None:
    return next((v for h in OBJECTIVE_HEADERS if (v := headers.get(h))), None)


def parse_request(
    request_id: str, path: str, headers: Mapping[str, str], body: bytes,
    objectives: Mapping[str, int],
) -> InferenceRequest:
    """Raise BadRequestError (400) for a body that is not an OpenAI request."""
    data = decode_json(body)  # the same 400s the simulators and the sidecar give
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' is required and must be a string", param="model")
    prompt = _prompt(data)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean", param="stream")
    salt = data.get("cache_salt", "")
    objective = _objective(headers)
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
        body=data,
    )


def headers_only_request(
    request_id: str, path: str, headers: Mapping[str, str], objectives: Mapping[str, int]
) -> InferenceRequest:
    """A request without a body (e.g. GET /v1/models)."""
    objective = _objective(headers)
    return InferenceRequest(request_id=request_id, path=path, headers=headers,
                            objective=objective,
                            priority=objectives.get(objective, 0) if objective else 0)


def _prompt(data: dict[str, Any]) -> str:
    if "messages" in data:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("'messages' must be a non-empty list", param="messages")
        # llm-d hashes the JSON of the messages, so the role markup is part of the prefix.
        return _compact(messages)
    if "prompt" in data:
        prompt = data["prompt"]
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            return "".join(prompt)
        if isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
            return json.dumps(prompt, separators=(",", ":"))
        raise BadRequestError("'prompt' must be a string, a list of strings or token ids",
                              param="prompt")
    if "input" in data:  # embeddings / responses
        return _compact(data["input"])
    raise BadRequestError("request needs 'messages' (chat) or 'prompt' (completions)")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
