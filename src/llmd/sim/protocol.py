"""Request bodies on the wire (OpenAI and SGLang-native) → `GenRequest`, with the engines' 400s.

Unknown fields are accepted and ignored, as the engines do (routers add their own, such as
`no_stop_trim`). Batched prompts (a list of several prompts) are answered with 400: the
simulator serves one prompt per request.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmd.config import format_loc
from llmd.errors import BadRequestError, NotFoundError
from llmd.kvcache import Tokenizer, render_chat
from llmd.sim.engine import GenRequest

__all__ = [
    "ChatBody",
    "CompletionBody",
    "GenerateBody",
    "OpenAIBody",
    "check_model",
    "chat_request",
    "completion_request",
    "generate_request",
    "parse_body",
]


M = TypeVar("M", bound=BaseModel)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Wire):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class OpenAIBody(_Wire):
    model: str | None = None
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)


class CompletionBody(OpenAIBody):
    prompt: str | list[int] | list[str] | list[list[int]]


class Message(_Wire):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(OpenAIBody):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class SamplingParams(_Wire):
    max_new_tokens: int | None = Field(128, ge=1)
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    n: int = Field(1, ge=1, le=128)
    temperature: float | None = Field(None, ge=0)
    sampling_seed: int | None = None


class GenerateBody(_Wire):
    text: str | None = None
    input_ids: list[int] | None = None
    sampling_params: SamplingParams = Field(
        default_factory=lambda: SamplingParams.model_validate({}))
    stream: bool = False
    rid: str | None = None


def parse_body(raw: bytes, model: type[M]) -> M:
    """Parse JSON `raw` into `model`; BadRequestError naming the first bad field."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = format_loc([p for p in err["loc"] if isinstance(p, int) or "[" not in p])
        raise BadRequestError(f"{loc}: {err['msg']}", param=loc) from None


def check_model(requested: str | None, served: str) -> None:
    """404 for a model this server does not serve (a missing `model` means the served one)."""
    if requested is not None and requested != served:
        raise NotFoundError(f"The model `{requested}` does not exist.", param="model")


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    return tuple(s for s in stops if s)


def _check_stream(body: OpenAIBody) -> None:
    if body.stream_options is not None and not body.stream:
        raise BadRequestError("Stream options can only be defined when `stream=True`.",
                              param="stream_options")


def _ids(ids: list[int], tokenizer: Tokenizer, param: str) -> list[int]:
    bad = next((t for t in ids if not 0 <= t < tokenizer.vocab_size), None)
    if bad is not None:
        raise BadRequestError(f"token id {bad} is out of vocabulary", param=param)
    return ids


def completion_request(body: CompletionBody, tokenizer: Tokenizer) -> GenRequest:
    _check_stream(body)
    prompt: Any = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise BadRequestError("batched prompts are not supported by the simulator; "
                                  "send one prompt per request", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
    else:
        ids = _ids(list(prompt), tokenizer, "prompt")
    return GenRequest(ids, body.max_tokens, body.n, _stop(body.stop), body.ignore_eos, body.seed)


def chat_request(body: ChatBody, tokenizer: Tokenizer) -> GenRequest:
    _check_stream(body)
    messages = [m.model_dump() for m in body.messages]
    try:
        prompt = render_chat(messages, bos=tokenizer.bos_token, eos=tokenizer.eos_token)
    except ValueError as exc:
        raise BadRequestError(str(exc), param="messages") from None
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    max_tokens = body.max_completion_tokens or body.max_tokens
    return GenRequest(ids, max_tokens, body.n, _stop(body.stop), body.ignore_eos, body.seed)


def generate_request(body: GenerateBody, tokenizer: Tokenizer) -> GenRequest:
    """SGLang's native `/generate`: `text` or `input_ids`, and `sampling_params`."""
    if (body.text is None) == (body.input_ids is None):
        raise BadRequestError("Either text or input_ids should be provided.", param="text")
    sp = body.sampling_params
    if body.text is not None:
        ids = tokenizer.encode(body.text)
    else:
        ids = _ids(list(body.input_ids or []), tokenizer, "input_ids")
    return GenRequest(ids, sp.max_new_tokens, sp.n, _stop(sp.stop), sp.ignore_eos,
                      sp.sampling_seed)
