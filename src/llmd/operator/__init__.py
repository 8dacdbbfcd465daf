"""`llmd operator`: reconcile `LLMInferenceService` resources into the llm-d stack with kopf.

`Operator(OperatorConfig(...), plan=...)` runs kopf (create/update/resume/delete handlers, a
resync timer and watches on every owned kind) behind an optional Lease election; each pass
server-side applies what differs, prunes what is no longer planned and writes `status`
(`reconcile.py`). `install_manifests()` is what installs it (`manifests.py`).
"""

from __future__ import annotations

from llmd.operator._client import FIELD_MANAGER
from llmd.operator._desired import OWNER_LABEL
from llmd.operator.lease import LeaseConfig, LeaseElector
from llmd.operator.manifests import DEFAULT_IMAGE, install_manifests, operator_rules
from llmd.operator.reconcile import Outcome, PlanFn, PlanResult, Reconciler
from llmd.operator.runner import Operator, OperatorConfig, default_plan

__all__ = [
    "DEFAULT_IMAGE",
    "FIELD_MANAGER",
    "LeaseConfig",
    "LeaseElector",
    "OWNER_LABEL",
    "Operator",
    "OperatorConfig",
    "Outcome",
    "PlanFn",
    "PlanResult",
    "Reconciler",
    "default_plan",
    "install_manifests",
    "operator_rules",
]
