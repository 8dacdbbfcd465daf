"""llm-d's `llm-d.ai/role` values and which stages each one serves."""

from __future__ import annotations

from llmd.engines import ROLE_LABEL
from llmd.epp.datastore import Endpoint

DECODE_ROLES = frozenset({"decode", "prefill-decode", "encode-prefill-decode", "both"})
PREFILL_ROLES = frozenset(
    {"prefill", "encode-prefill", "prefill-decode", "encode-prefill-decode", "both"}
)


def role_of(ep: Endpoint) -> str | None:
    return ep.labels.get(ROLE_LABEL)
