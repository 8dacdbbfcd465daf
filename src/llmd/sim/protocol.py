"""Request bodies on the wire (OpenAI and SGLang-native) → `GenRequest`, with the engines' 400s.

Unknown fields are accepted and ignored, as the engines do (routers add their own, such as
`no_stop_trim`). A completions `prompt` may be a batch (a list of strings or of token-id
lists): one `GenRequest` per prompt, each its own sequence in the engine. `logprobs`,
`top_logprobs` and `echo` are validated as vLLM does (at most `MAX_LOGPROBS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmd._json import decode_json
from llmd.config import format_loc
from llmd.errors import BadRequestError, NotFoundError
from llmd.kvcache import Tokenizer, message_text, render_chat
from llmd.sim._logprobs import MAX_LOGPROBS
from llmd.sim.engine import GenRequest

__all__ = [
    "ApiRequest",
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
    cache_salt: str | None = None
    """vLLM's prefix-cache isolation: prompts share KV blocks only with the same salt."""

    @field_validator("cache_salt")
    @classmethod
    def _salt(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("Parameter 'cache_salt' must be a non-empty string if provided.")
        return value


class CompletionBody(OpenAIBody):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False


class Message(_Wire):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(OpenAIBody):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    echo: bool = False


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One OpenAI request in engine terms.

    `gens`: one per prompt (a chat request has one). `echo`: per prompt, the text prepended to
    each of its choices (empty tuple: no echo). `logprobs`: top entries per token (0: only the
    sampled token's), None when not asked.
    """

    gens: tuple[GenRequest, ...]
    echo: tuple[str, ...] = ()
    logprobs: int | None = None


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
    """Parse JSON `raw` into `model`; BadRequestError naming the first bad field (or why the
    body is not JSON the simulator can handle: `llmd._json.decode_json`)."""
    data = decode_json(raw)
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


def _check_logprobs(k: int, param: str) -> None:
    if k < 0:
        raise BadRequestError(f"`{param}` must be a positive value.", param=param)
    if k > MAX_LOGPROBS:
        raise BadRequestError(f"Requested sample logprobs of {k}, which is greater than max "
                              f"allowed: {MAX_LOGPROBS}", param=param)


def completion_request(body: CompletionBody, tokenizer: Tokenizer) -> ApiRequest:
    """One GenRequest per prompt; errors about one prompt of a batch name it (`prompt[i]`)."""
    _check_stream(body)
    if body.logprobs is not None:
        _check_logprobs(body.logprobs, "logprobs")
    prompt: Any = body.prompt
    if isinstance(prompt, list) and not prompt:
        raise BadRequestError("prompt must not be an empty list", param="prompt")
    batched = isinstance(prompt, list) and isinstance(prompt[0], str | list)
    prompts: list[str | list[int]] = list(prompt) if batched else [prompt]
    stop = _stop(body.stop)
    gens, texts = [], []
    for i, one in enumerate(prompts):
        if isinstance(one, str):
            ids = tokenizer.encode(one)
        else:
            try:
                ids = _ids(list(one), tokenizer, "prompt")
            except BadRequestError as exc:
                if not batched:
                    raise
                raise BadRequestError(f"prompt[{i}]: {exc.message}", param="prompt") from None
        gens.append(GenRequest(ids, body.max_tokens, body.n, stop, body.ignore_eos, body.seed,
                               body.cache_salt))
        if body.echo:
            texts.append(one if isinstance(one, str) else tokenizer.decode(one))
    return ApiRequest(tuple(gens), tuple(texts), body.logprobs)


def chat_request(body: ChatBody, tokenizer: Tokenizer) -> ApiRequest:
    _check_stream(body)
    top = body.top_logprobs
    if top is not None:
        _check_logprobs(top, "top_logprobs")
        if top > 0 and not body.logprobs:
            raise BadRequestError("when using `top_logprobs`, `logprobs` must be set to true.",
                                  param="top_logprobs")
    messages = [m.model_dump() for m in body.messages]
    try:
        prompt = render_chat(messages, bos=tokenizer.bos_token, eos=tokenizer.eos_token)
    except ValueError as exc:
        raise BadRequestError(str(exc), param="messages") from None
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    max_tokens = body.max_completion_tokens or body.max_tokens
    gen = GenRequest(ids, max_tokens, body.n, _stop(body.stop), body.ignore_eos, body.seed,
                     body.cache_salt)
    # vLLM's chat `echo`: the reply starts with the last message when it is the assistant's own.
    last = body.messages[-1]
    echo = (message_text(last.content),) if body.echo and last.role == "assistant" else ()
    return ApiRequest((gen,), echo, (top or 0) if body.logprobs else None)


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
