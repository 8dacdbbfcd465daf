"""vLLM NIXL v2, serial: prefill (max_tokens 1) returns `kv_transfer_params`; decode uses them."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, ClassVar

from aiohttp import web

from llmd.sidecar._sse import cached_tokens_of
from llmd.sidecar.connectors.base import PdRequest

__all__ = ["NixlV2Connector"]

log = logging.getLogger(__name__)

_LIMITS = ("max_tokens", "max_completion_tokens")


class NixlV2Connector:
    name: ClassVar[str] = "nixlv2"

    async def run(self, req: PdRequest) -> web.StreamResponse:
        headers = req.headers
        headers.setdefault("x-request-id", str(uuid.uuid1()))
        prefill_body: dict[str, Any] = {
            **req.body,
            "kv_transfer_params": {
                "do_remote_decode": True,
                "do_remote_prefill": False,
                "remote_engine_id": None,
                "remote_block_ids": None,
                "remote_host": None,
                "remote_port": None,
            },
            "stream": False,
            "max_tokens": 1,
            "max_completion_tokens": 1,
        }
        prefill_body.pop("stream_options", None)
        result = await req.upstream.prefill(req.prefill, req.path, prefill_body, headers)
        if not result.ok:
            # Since llm-d #1206 there is no silent fallback: the client sees the prefill error.
            return result.to_response()
        params = result.payload.get("kv_transfer_params") if isinstance(result.payload, dict) \
            else None
        if params is None:
            log.warning("prefill %s returned no kv_transfer_params; decode will prefill locally",
                        req.prefill.netloc())
        decode_body = {**req.body, "kv_transfer_params": params}
        cached = cached_tokens_of(result.payload)

        async def prefill_cached() -> int:
            return cached

        return await req.upstream.stream_decode(
            req.http, "POST", req.path, headers, json.dumps(decode_body).encode(),
            cached_tokens=prefill_cached)
