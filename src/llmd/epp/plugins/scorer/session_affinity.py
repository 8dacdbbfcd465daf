"""`session-affinity-scorer`: 1.0 for the endpoint named by the `x-session-token` header.

llm-d's token is base64 of the serving pod's namespace/name, set on the response; llmd's is
base64 of the endpoint id (`ip:port`), which a client or proxy can set the same way.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import ClassVar

from llmd.epp.datastore import EndpointId, PoolSnapshot
from llmd.epp.plugins.base import NoParams
from llmd.epp.request import InferenceRequest

__all__ = ["SESSION_HEADER", "SessionAffinityScorer", "session_token"]

SESSION_HEADER = "x-session-token"


def session_token(ep_id: EndpointId) -> str:
    return base64.b64encode(ep_id.encode()).decode()


class SessionAffinityScorer:
    type: ClassVar[str] = "session-affinity-scorer"
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name, self.params = name, params

    def score(self, request: InferenceRequest, pool: PoolSnapshot) -> Mapping[EndpointId, float]:
        token = request.header(SESSION_HEADER)
        target = None
        if token:
            try:
                target = base64.b64decode(token, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                target = None
        return {ep.id: 1.0 if ep.id == target else 0.0 for ep in pool.candidates}
