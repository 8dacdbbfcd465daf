"""Handlers for engine-specific routes. The app mounts exactly `adapter.extra_routes`.

vLLM: `/health`, `/tokenize`. SGLang: `/health`, `/health_generate`, `/get_model_info`,
`/get_server_info`, `/get_load`, and native `/generate` (in `app.py`, beside the OpenAI API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import Field, model_validator

from llmd.errors import NoEndpointError
from llmd.kvcache import render_chat
from llmd.sim._state import STATE, SimState
from llmd.sim.engine import GenRequest
from llmd.sim.protocol import Message, _Wire, check_model, parse_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def health(request: web.Request) -> web.Response:
    """200 with an empty body while serving; 503 once shutdown has begun."""
    if not request.app[STATE].ready:
        raise NoEndpointError("the server is shutting down")
    return web.Response()


class TokenizeBody(_Wire):
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = Field(True)

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeBody:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self


async def tokenize(request: web.Request) -> web.Response:
    """vLLM's `/tokenize`: `{count, max_model_len, tokens, token_strs}`."""
    st = request.app[STATE]
    body = parse_body(await request.read(), TokenizeBody)
    check_model(body.model, st.cfg.served_name)
    tok = st.tokenizer
    if body.messages is not None:
        text = render_chat([m.model_dump() for m in body.messages], bos=tok.bos_token,
                           eos=tok.eos_token, add_generation_prompt=body.add_generation_prompt)
        ids = tok.encode(text, add_special_tokens=False)
    else:
        ids = tok.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    return web.json_response({"count": len(ids), "max_model_len": st.cfg.max_model_len,
                              "tokens": ids, "token_strs": None})


async def health_generate(request: web.Request) -> web.Response:
    """SGLang's `/health_generate`: one token through the real scheduler path."""
    st = request.app[STATE]
    if not st.ready:
        raise NoEndpointError("the server is shutting down")
    req = GenRequest(st.tokenizer.encode("health"), max_tokens=1, ignore_eos=True)
    async with st.engine.sequence(req) as seq:
        await seq.prefill()
        await seq.step()
    return web.Response()


async def get_model_info(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({
        "model_path": st.cfg.model,
        "tokenizer_path": st.cfg.tokenizer,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": "llmd-sim",
        "architectures": ["LlmdSimForCausalLM"],
    })


def _server_args(st: SimState) -> dict[str, Any]:
    cfg = st.cfg
    host, _, port = st.served_by.rpartition(":")
    return {
        "model_path": cfg.model,
        "tokenizer_path": cfg.tokenizer,
        "served_model_name": cfg.served_name,
        "host": host or cfg.host,
        "port": int(port) if port else cfg.port,
        "page_size": cfg.block_size,
        "max_running_requests": cfg.max_num_seqs,
        "max_queued_requests": cfg.max_waiting,
        "max_total_tokens": cfg.kv_cache_blocks * cfg.block_size,
        "context_length": cfg.max_model_len,
        "random_seed": cfg.seed,
        "enable_metrics": True,
        "disaggregation_mode": "null" if cfg.role == "both" else cfg.role,
        "disaggregation_bootstrap_port": cfg.bootstrap_port,
        "tp_size": 1,
        "dp_size": 1,
    }


async def get_server_info(request: web.Request) -> web.Response:
    """SGLang's `/get_server_info`: its server args, internal state and version."""
    st = request.app[STATE]
    body = _server_args(st)
    body["internal_states"] = [{
        "last_gen_throughput": 0.0,
        "max_total_num_tokens": st.cfg.kv_cache_blocks * st.cfg.block_size,
    }]
    body["version"] = "llmd-sim"
    return web.json_response(body)


async def get_load(request: web.Request) -> web.Response:
    """SGLang's `/get_load`: one entry per data-parallel rank (the simulator has one)."""
    engine = request.app[STATE].engine
    tokens = engine.pool.used * engine.cfg.block_size
    return web.json_response([{
        "dp_rank": 0,
        "num_reqs": engine.num_running + engine.num_waiting,
        "num_waiting_reqs": engine.num_waiting,
        "num_tokens": tokens,
    }])


GET_ROUTES: dict[str, Handler] = {
    "/health": health,
    "/health_generate": health_generate,
    "/get_model_info": get_model_info,
    "/get_server_info": get_server_info,
    "/get_load": get_load,
}
POST_ROUTES: dict[str, Handler] = {"/tokenize": tokenize}
