"""vLLM NIXL v2, serial: prefill (max_tokens 1) returns `kv_transfer_params`; decode uses them."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, ClassVar

from aiohttp import web

from llmd.sidecar._sse import cached_tokens_of
from llmd.sidecar.config import connector_adapter
from llmd.sidecar.connectors.base import PdRequest, log_fallback

__all__ = ["NixlV2Connector"]

log = logging.getLogger(__name__)

_LIMITS = ("max_tokens", "max_completion_tokens")


class NixlV2Connector:
    name: ClassVar[str] = "nixlv2"
    request_fields: ClassVar[tuple[str, ...]] = connector_adapter(name).pd.request_fields
    """The leg field, as the vLLM adapter's P/D protocol declares it (`kv_transfer_params`)."""
    decode_alone: ClassVar[bool] = connector_adapter(name).pd.decode_alone
    """Whether the decode engine serves a request without a prefill peer (vLLM: yes)."""

    async def run(self, req: PdRequest) -> web.StreamResponse:
        (params_field,) = self.request_fields
        headers = req.headers
        headers.setdefault("x-request-id", str(uuid.uuid1()))
        prefill_body: dict[str, Any] = {
            **req.body,
            params_field: {
                "do_remote_decode": True,
                "do_remote_prefill": False,
                "remote_engine_id": None,
                "remote_block_ids": None,
                "remote_host": None,
                "remote_port": None,
            },
            "stream": False,
            **dict.fromkeys(_LIMITS, 1),
        }
        prefill_body.pop("stream_options", None)
        # Serial legs: until the prefill answers nothing is sent anywhere else, so a prefill
        # that was not reached simply hands the request to the next candidate.
        for attempt, target in enumerate(req.prefills):
            result = await req.upstream.prefill(target, req.path, prefill_body, headers)
            if not (result.unreached and attempt + 1 < len(req.prefills)):
                break
            log_fallback(req, attempt, result)
        if result.unreached and self.decode_alone:
            # No prefill server was reached: nothing was computed anywhere, and this decode
            # engine serves a request alone (vLLM kv_both), so it prefills locally instead of
            # losing the request. A prefill that answered with an error is still the answer.
            log.warning("no prefill candidate reached (%s); decoding locally (x-request-id %s)",
                        ", ".join(t.netloc() for t in req.prefills), headers["x-request-id"])
            return await req.upstream.stream_decode(req.http, "POST", req.path, headers,
                                                    json.dumps(req.body).encode())
        if not result.ok:
            # Since llm-d #1206 there is no silent fallback: the client sees the prefill error.
            return result.to_response()
        params = result.payload.get(params_field) if isinstance(result.payload, dict) else None
        if params is None:
            log.warning("prefill %s returned no %s; decode will prefill locally",
                        target.netloc(), params_field)
        decode_body = {**req.body, params_field: params}
        cached = cached_tokens_of(result.payload)

        async def prefill_cached() -> int:
            return cached

        return await req.upstream.stream_decode(
            req.http, "POST", req.path, headers, json.dumps(decode_body).encode(),
            cached_tokens=prefill_cached)
