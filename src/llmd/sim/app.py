"""The simulator's aiohttp application: OpenAI API, the engine's extra routes, /metrics.

Every response carries `x-llmd-served-by: <host>:<port>` (the address the server listens on),
so tests and benchmarks behind a gateway can see which endpoint served a request, and every
generation answer `x-llmd-kv-source: local|transfer` (whether this server computed the prompt
or received its KV from a P/D prefill server).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from llmd.errors import BadRequestError, RequestError, error_body
from llmd.kvcache import Tokenizer
from llmd.sim import _extras
from llmd.sim._batch import run_batch
from llmd.sim._pd import KV_SOURCE_HEADER, LOCAL, Leg
from llmd.sim._state import STATE, SimState
from llmd.sim.config import FAILURE_KINDS
from llmd.sim.engine import Engine, GenRequest, Sequence
from llmd.sim.protocol import (
    ApiRequest,
    ChatBody,
    CompletionBody,
    GenerateBody,
    OpenAIBody,
    chat_request,
    check_model,
    completion_request,
    generate_request,
    parse_body,
)
from llmd.sim.responses import (
    ChatFormat,
    CompletionFormat,
    Format,
    GenerateFormat,
    _dumps,
    sse,
)

__all__ = ["SERVED_BY_HEADER", "build_app"]

log = logging.getLogger(__name__)
B = TypeVar("B", bound=OpenAIBody)
T = TypeVar("T")

SERVED_BY_HEADER = "x-llmd-served-by"
_GENERATION_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/generate"})
# Prompts longer than this are tokenized off the event loop (HF tokenizers release the GIL).
_INLINE_TOKENIZE_CHARS = 16_384
_COALESCE_BYTES = 64 * 1024


def build_app(state: SimState) -> web.Application:
    """One simulated server. Mounts exactly the routes `state.adapter.extra_routes` lists."""
    app = web.Application(client_max_size=state.cfg.max_body_bytes,
                          middlewares=[_errors, _failures])
    app[STATE] = state
    app.on_response_prepare.append(_served_by)
    r = app.router
    r.add_post("/v1/completions", _completions)
    r.add_post("/v1/chat/completions", _chat)
    r.add_get("/v1/models", _models)
    r.add_get("/metrics", _metrics)
    for method, path, handler in state.pd.routes():
        r.add_route(method, path, handler)
    known = {**_extras.GET_ROUTES, **_extras.POST_ROUTES, "/generate": _generate}
    missing = sorted(set(state.adapter.extra_routes) - set(known))
    if missing:
        raise RuntimeError(f"the simulator has no handler for {missing} "
                           f"({state.adapter.name} lists them in extra_routes)")
    for path in sorted(state.adapter.extra_routes):
        if path in _extras.GET_ROUTES:
            r.add_get(path, _extras.GET_ROUTES[path])
        else:
            r.add_post(path, known[path])
    return app


async def _served_by(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[SERVED_BY_HEADER] = request.app[STATE].served_by


def _error(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=_dumps(body), content_type="application/json")


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """Every failure becomes OpenAI-style JSON; nothing reaches a client as a traceback."""
    try:
        return await handler(request)
    except RequestError as exc:
        return _error(exc.status, exc.body())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = _error(exc.status, error_body(exc.status, exc.reason))
        if "Allow" in exc.headers:  # 405: the methods the route takes, as vLLM sends them
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception as exc:  # a simulator bug: log it, answer JSON 500, keep serving
        log.exception("internal error serving %s %s", request.method, request.path)
        return _error(500, error_body(500, f"internal simulator error: {type(exc).__name__}"))


@web.middleware
async def _failures(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    """`--failure-rate`: fail that fraction of generation requests with a seeded kind."""
    st = request.app[STATE]
    rate = st.cfg.failure_rate
    if rate > 0 and request.path in _GENERATION_PATHS and st.rng.random() < rate:
        status, kind, message = FAILURE_KINDS[st.rng.choice(st.cfg.failure_kinds)]
        st.metrics.injected_failures.inc()
        return _error(status, error_body(status, message, kind))
    return await handler(request)


async def _models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    card = {"id": st.cfg.served_name, "object": "model", "created": st.started,
            "owned_by": st.adapter.name, "root": st.cfg.model, "parent": None,
            "max_model_len": st.cfg.max_model_len, "permission": []}
    return web.json_response({"object": "list", "data": [card]})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _tokenized(raw_len: int, fn: Callable[[], T]) -> T:
    if raw_len <= _INLINE_TOKENIZE_CHARS:
        return fn()
    return await asyncio.to_thread(fn)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, CompletionBody, completion_request, CompletionFormat)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _openai(request, ChatBody, chat_request, ChatFormat)


async def _openai(request: web.Request, wire: type[B],
                  to_api: Callable[[B, Tokenizer], ApiRequest],
                  fmt_type: type[CompletionFormat | ChatFormat]) -> web.StreamResponse:
    st = request.app[STATE]
    raw = await request.read()
    body = parse_body(raw, wire)
    check_model(body.model, st.cfg.served_name)
    api = await _tokenized(len(raw), lambda: to_api(body, st.tokenizer))
    opts = body.stream_options
    fmt = fmt_type(st.cfg.served_name, bool(opts and opts.include_usage),
                   bool(opts and opts.continuous_usage_stats), echo=api.echo,
                   logprobs=api.logprobs)
    return await _run(request, api.gens, fmt, body.stream, body.model_extra or {})


async def _generate(request: web.Request) -> web.StreamResponse:
    """SGLang's native `/generate`."""
    st = request.app[STATE]
    raw = await request.read()
    body = parse_body(raw, GenerateBody)
    gen = await _tokenized(len(raw), lambda: generate_request(body, st.tokenizer))
    return await _run(request, (gen,), GenerateFormat(body.rid), body.stream,
                      body.model_extra or {})


async def _run(request: web.Request, gens: tuple[GenRequest, ...], fmt: Format, stream: bool,
               pd_fields: dict[str, Any]) -> web.StreamResponse:
    """Admit, fill the prompt's KV (prefill, or a P/D transfer), decode; stream each step's
    chunk as it is produced. Several prompts (a batch) run as one sequence each.

    A client that disconnects ends the sequence: the write fails (or aiohttp cancels the
    handler) and leaving `engine.sequence` frees its blocks and its running slot.
    """
    st = request.app[STATE]
    engine = st.engine
    leg = st.pd.leg(pd_fields, stream, request.path)
    try:
        if len(gens) > 1 and leg is not LOCAL:
            raise BadRequestError("a batch of prompts cannot take part in P/D disaggregation; "
                                  "send one prompt per request", param="prompt")
        if leg.prefill_only:
            gens = tuple(dataclasses.replace(g, max_tokens=1, ignore_eos=True) for g in gens)
        seqs = _prepare(engine, gens)
        if len(seqs) > 1:
            return await run_batch(request, engine, seqs, fmt, stream)
        async with engine.sequence(seqs[0]) as seq:
            return await _generate_leg(request, seq, leg, fmt, stream)
    finally:
        leg.close()


def _prepare(engine: Engine, gens: tuple[GenRequest, ...]) -> list[Sequence]:
    """Validate every prompt before any runs; an error in a batch names its prompt."""
    if len(gens) == 1:
        return [engine.prepare(gens[0])]
    seqs = []
    for i, gen in enumerate(gens):
        try:
            seqs.append(engine.prepare(gen))
        except BadRequestError as exc:
            raise BadRequestError(f"prompt[{i}]: {exc.message}", param=exc.param) from None
    return seqs


async def _generate_leg(request: web.Request, seq: Sequence, leg: Leg, fmt: Format,
                        stream: bool) -> web.StreamResponse:
    engine = request.app[STATE].engine
    source = {KV_SOURCE_HEADER: await leg.start(seq)}
    if not stream:
        while not seq.finished:
            await seq.step()
        extra = await leg.finish(seq)
        body = fmt.full([seq])
        if extra and isinstance(body, dict):
            body.update(extra)
        return _json(body, source)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache", **source})
    await resp.prepare(request)
    try:
        # Each chunk is written as soon as the next token would take time. When it would
        # not (time scale 0), the chunks are still separate SSE events but share one write:
        # a write per token would cost the simulator most of its CPU at zero latency.
        pending = [fmt.head([seq])]
        size = 0
        while not seq.finished:
            data = fmt.chunk(0, seq, await seq.step())
            pending.append(data)
            size += len(data)
            if size >= _COALESCE_BYTES or (engine.itl_s() > 0 and not seq.finished):
                await resp.write(b"".join(pending))
                pending, size = [], 0
        try:
            await leg.finish(seq)
        except RequestError as exc:  # headers are out: the error goes in the stream
            pending.append(sse(exc.body()))
        pending.append(fmt.tail([seq]))
        await resp.write(b"".join(pending))
        await resp.write_eof()
    except ConnectionResetError:
        log.debug("client went away mid-stream; sequence released")
    return resp


def _json(body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=_dumps(body), content_type="application/json", headers=headers)
