"""Dynamic Resource Allocation: a ResourceClaimTemplate per role instead of device-plugin counts.

As in chart v0.4.12: `accelerator.dra` (or the role's `accelerator.dra`) switches a role to DRA;
`accelerator.resourceClaimTemplates.<type>` gives the claim's name, device class, match mode,
optional count (default: tensor x dataLocal) and selectors. Engine containers reference the
claim in `resources.claims`; the role's own `resourceClaims` are added beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmd.deploy._plan import RolePlan
from llmd.deploy.values import Values

__all__ = ["RoleClaim", "role_claim"]


@dataclass(frozen=True, slots=True)
class RoleClaim:
    claim_name: str
    template_name: str
    template: dict[str, Any]
    """The ResourceClaimTemplate's `spec` (metadata is added by the caller)."""


def role_claim(values: Values, plan: RolePlan, fullname: str) -> RoleClaim | None:
    role_accel = plan.values.accelerator
    dra = role_accel.dra if role_accel and role_accel.dra is not None else values.accelerator.dra
    if not dra:
        return None
    accel = (role_accel.type if role_accel and role_accel.type else None) \
        or values.accelerator.type or "nvidia"
    config: dict[str, Any] = dict(values.accelerator.resource_claim_templates.get(accel) or {})
    claim_name = str(config.get("name") or f"{accel}-claim")
    request: dict[str, Any] = {
        "deviceClassName": config.get("class") or f"gpu.{accel}.com",
        "count": int(config.get("count") or plan.parallel.gpus_per_pod),
    }
    if selectors := config.get("selectors"):
        request["selectors"] = selectors
    match = str(config.get("match") or "exactly")
    spec = {"spec": {"devices": {"requests": [{"name": accel, match: request}]}}}
    # One template per role: decode and prefill may differ in type and count.
    return RoleClaim(claim_name, f"{fullname}-{plan.name}-{claim_name}", spec)
