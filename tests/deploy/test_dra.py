"""DRA: a ResourceClaimTemplate per role; engine containers claim it instead of device counts."""

from __future__ import annotations

from typing import Any

from llmd.deploy import render_files

from ._cases import EXAMPLES


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_per_role_claims_replace_device_counts() -> None:
    objects = render_files([EXAMPLES / "values-sglang-pd.yaml"],
                           ["accelerator.dra=true", "prefill.accelerator.type=amd"],
                           release="r").objects
    templates = _by_kind(objects, "ResourceClaimTemplate")
    decode_t = templates["r-llm-d-modelservice-decode-nvidia-claim-template"]
    prefill_t = templates["r-llm-d-modelservice-prefill-amd-claim-template"]
    assert decode_t["spec"]["spec"]["devices"]["requests"] == [
        {"name": "nvidia", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 4}}]
    assert prefill_t["spec"]["spec"]["devices"]["requests"][0]["exactly"] == {
        "deviceClassName": "gpu.amd.com", "count": 1}
    deployments = _by_kind(objects, "Deployment")
    pod = deployments["r-llm-d-modelservice-decode"]["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "nvidia-claim-template",
                                      "resourceClaimTemplateName": decode_t["metadata"]["name"]}]
    resources = pod["containers"][0]["resources"]
    assert resources["claims"] == [{"name": "nvidia-claim-template"}]
    assert "nvidia.com/gpu" not in resources["limits"]
    # The sidecar claims nothing.
    assert "claims" not in pod["initContainers"][0]["resources"]


def test_role_override_and_extra_claims() -> None:
    objects = render_files([EXAMPLES / "values-vllm.yaml"], [
        "decode.accelerator.dra=true",
        "accelerator.resourceClaimTemplates.nvidia.count=8",
        "decode.resourceClaims[0].name=imex",
        "decode.resourceClaims[0].resourceClaimTemplateName=imex-channel",
    ], release="r").objects
    (template,) = _by_kind(objects, "ResourceClaimTemplate").values()
    assert template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == 8
    pod = _by_kind(objects, "Deployment")["r-llm-d-modelservice-decode"]["spec"]["template"]
    assert [c["name"] for c in pod["spec"]["resourceClaims"]] == ["nvidia-claim-template", "imex"]
