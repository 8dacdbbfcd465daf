"""`session-affinity-scorer`: 1.0 for the endpoint named by the `x-session-token` header, and
the token of the chosen endpoint on every response (llm-d's header-based session affinity).

The token is base64 of the endpoint's name as llm-d writes it: `namespace/pod` (Kubernetes
discovery; `-rank-<i>` with several target ports) or, for a static endpoint with no pod, its
`ip:port`. A token naming the `ip:port` of a Kubernetes endpoint matches it too. A token that
is not base64, or names no candidate, scores 0 everywhere: the request is routed as if it
carried none, and its response carries the token of wherever it went.

Like llm-d (where the scorer is also a PostResponse plugin, and every configured plugin gets
the response), the token is echoed whenever the config declares this plugin, for every routed
request, naming the primary profile's endpoint (in P/D: the decode endpoint).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, EndpointId, PoolSnapshot
from llmd.epp.headers import SESSION_HEADER
from llmd.epp.plugins.base import NoParams, SchedulingResult
from llmd.epp.request import InferenceRequest

__all__ = ["SessionAffinityScorer", "session_token"]


def session_token(ep: Endpoint) -> str:
    """The token naming `ep` (what the response carries and the scorer matches)."""
    return base64.b64encode((ep.spec.name or ep.id).encode()).decode()


class SessionAffinityScorer:
    type: ClassVar[str] = "session-affinity-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        token = request.header(SESSION_HEADER)
        target = ""
        if token:
            try:
                target = base64.b64decode(token, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                target = ""
        if not target:
            return dict.fromkeys((ep.id for ep in pool.candidates), 0.0)
        return {ep.id: 1.0 if target in (ep.id, ep.spec.name) else 0.0
                for ep in pool.candidates}

    def response_headers(
        self, request: InferenceRequest, result: SchedulingResult
    ) -> Mapping[str, str]:
        return {SESSION_HEADER: session_token(result.destination)}
