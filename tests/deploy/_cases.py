"""The values files the deploy tests render: golden cases and the upstream chart examples."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
COMPAT = REPO.parent / "shared" / "compat" / "modelservice-v0.4.12"

SGLANG_IMAGE = "lmsysorg/sglang:v0.5.6.post2"
BOTH_AS_SGLANG = (
    "decode.containers[0].modelCommand=sglangServe",
    f"decode.containers[0].image={SGLANG_IMAGE}",
    "prefill.containers[0].modelCommand=sglangServe",
    f"prefill.containers[0].image={SGLANG_IMAGE}",
)

# name -> (engine, values files, --set expressions)
GOLDEN_CASES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "vllm-aggregated": ("vllm", ("values-vllm.yaml",), ()),
    "sglang-aggregated": ("sglang", ("values-sglang.yaml",), ()),
    "vllm-pd": ("vllm", ("values-vllm-pd.yaml",), ()),
    "sglang-pd": ("sglang", ("values-sglang-pd.yaml",), ()),
    "vllm-multinode": ("vllm", ("values-vllm-multinode.yaml",), ()),
    "sglang-multinode": ("sglang", ("values-sglang-multinode.yaml",), ()),
    "both-as-vllm": ("vllm", ("values-both.yaml",), ()),
    "both-as-sglang": ("sglang", ("values-both.yaml",), BOTH_AS_SGLANG),
    "vllm-precise": ("vllm", ("values-vllm-precise.yaml",), ()),
    "sglang-precise": ("sglang", ("values-sglang-precise.yaml",), ()),
}

# upstream example -> release name used by the chart's generate-example-output.sh
COMPAT_CASES = {"cpu": "cpu-sim", "pd": "pd"}
NAMESPACE = "llm"
