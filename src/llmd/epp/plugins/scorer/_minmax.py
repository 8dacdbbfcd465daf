"""Min-max normalisation shared by the load scorers (lower value → higher score)."""

from __future__ import annotations

from collections.abc import Callable

from llmd.epp.datastore import Endpoint, EndpointId, PoolSnapshot


def inverse_minmax(
    pool: PoolSnapshot, value: Callable[[Endpoint], float]
) -> dict[EndpointId, float]:
    """1.0 for the lowest value, 0.0 for the highest; all 1.0 when every value is equal."""
    values = {ep.id: value(ep) for ep in pool.candidates}
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return dict.fromkeys(values, 1.0)
    span = hi - lo
    return {k: (hi - v) / span for k, v in values.items()}
