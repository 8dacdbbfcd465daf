"""llm-d plugin types llmd knows of and does not implement: one table, each with why and what
to use instead, so a guide's config that names one fails with a message a user can act on
rather than "not a plugin type".

llmd is a text router in front of vLLM and SGLang: multimodal encode disaggregation, the
latency-predictor sidecars, Kubernetes node topology, several clusters and GPU telemetry are
outside it; a few other types do work llmd already does elsewhere (tokenizing, KV-event
subscription).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UNSUPPORTED", "Unsupported", "unsupported_message"]


@dataclass(frozen=True, slots=True)
class Unsupported:
    kind: str
    why: str
    instead: str


_MULTIMODAL = ("multimodal encode disaggregation (E/P/D) needs an encoder pool and the "
               "multimodal embeddings cache; llmd routes text requests and runs no encoders")
_MM_INSTEAD = ("drop it: multimodal requests are routed like text (P/D with "
               "disagg-profile-handler and a prefill decider)")
_PREDICTOR = ("it needs llm-d's latency-predictor sidecars (trained TTFT/TPOT models), "
              "which llmd does not run")
_PREDICTOR_INSTEAD = ("prefix-cache-affinity-filter + token-load-scorer with a measured "
                      "peakPrefillThroughput (`llmd calibrate`)")

UNSUPPORTED: dict[str, Unsupported] = {
    # Multimodal encode.
    "encode-filter": Unsupported("filter", _MULTIMODAL, _MM_INSTEAD),
    "always-disagg-multimodal-decider": Unsupported("decider", _MULTIMODAL, _MM_INSTEAD),
    "mm-embeddings-cache-producer": Unsupported("data producer", _MULTIMODAL, _MM_INSTEAD),
    "mm-embeddings-cache-scorer": Unsupported("scorer", _MULTIMODAL, _MM_INSTEAD),
    # Latency predictor.
    "predicted-latency-producer": Unsupported("data producer", _PREDICTOR, _PREDICTOR_INSTEAD),
    "latency-scorer": Unsupported("scorer", _PREDICTOR, _PREDICTOR_INSTEAD),
    "slo-headroom-tier-filter": Unsupported("filter", _PREDICTOR, _PREDICTOR_INSTEAD),
    "latency-slo-admitter": Unsupported("admitter", _PREDICTOR, "objectives with a priority "
                                        "below 0, shed with 429 when the pool is saturated"),
    "probabilistic-admitter": Unsupported(
        "admitter", "llmd has no admitter extension point", "objectives with a priority "
        "below 0, shed with 429 while the saturation detector reports saturation"),
    # Topology, several clusters, GPU telemetry.
    "topology-affinity-filter": Unsupported(
        "filter", "it reads Kubernetes node topology (zone, rack, NVLink domain) that llmd's "
        "endpoints do not carry", "label-selector-filter on labels you give the endpoints"),
    "topology-affinity-scorer": Unsupported(
        "scorer", "it reads Kubernetes node topology that llmd's endpoints do not carry",
        "label-selector-filter on labels you give the endpoints"),
    "topology-extractor": Unsupported(
        "extractor", "it reads Kubernetes node topology that llmd's endpoints do not carry",
        "labels on the endpoints (`llmd epp --endpoint ip:port,key=value`)"),
    "multicluster-session-affinity-filter": Unsupported(
        "filter", "llmd schedules one pool in one cluster", "session-affinity-scorer"),
    "multicluster-file-discovery": Unsupported(
        "endpoint discovery", "llmd schedules one pool in one cluster", "file-discovery"),
    "dcgm-data-source": Unsupported(
        "data source", "NVIDIA DCGM GPU telemetry; llmd reads the engines' own /metrics",
        "metrics-data-source + core-metrics-extractor (the default)"),
    "dcgm-extractor": Unsupported(
        "extractor", "NVIDIA DCGM GPU telemetry; llmd reads the engines' own /metrics",
        "core-metrics-extractor (the default)"),
    # Work llmd does elsewhere.
    "token-producer": Unsupported(
        "data producer", "llmd tokenizes in the EPP: precise-prefix-cache-producer's "
        "`tokenizer` parameter (no vLLM render pool, for SGLang as for vLLM); the "
        "approximate producer and the load plugins estimate tokens from characters",
        "remove it"),
    "endpoint-notification-source": Unsupported(
        "data source", "precise-prefix-cache-producer subscribes to every endpoint's KV "
        "events itself", "remove it and its dataLayer.sources entry"),
    "p2p-source-producer": Unsupported(
        "data producer", "KV pulled between model servers needs llm-d's P2P connector",
        "disagg-profile-handler for P/D"),
    "k8s-notification-source": Unsupported(
        "data source", "llmd watches the InferencePool itself (`llmd epp --kubernetes`)",
        "remove it"),
    # Parsers llmd does not have.
    "anthropic-parser": Unsupported("parser", "llmd parses OpenAI request bodies",
                                    "openai-parser"),
    "vllmhttp-parser": Unsupported("parser", "llmd parses OpenAI request bodies "
                                   "(vLLM's /inference/v1/generate is not routed)",
                                   "openai-parser"),
    "sglanghttp-parser": Unsupported("parser", "llmd parses OpenAI request bodies (SGLang's "
                                     "native /generate is not routed)", "openai-parser"),
    "vllmgrpc-parser": Unsupported("parser", "vLLM's gRPC API is not routed", "openai-parser"),
    "vertexai-parser": Unsupported("parser", "Vertex AI's gRPC API is not routed",
                                   "openai-parser"),
    # Flow-control policies beyond the ones llmd has (fairness: global-strict, round-robin;
    # ordering: fcfs, edf; usage limit: static; saturation: utilization, concurrency).
    "program-aware-fairness": Unsupported(
        "fairness policy", "it ranks flows by llm-d's program (agent) identity, which llmd's "
        "requests do not carry", "round-robin-fairness-policy over "
        "x-gateway-inference-fairness-id"),
    "slo-deadline-ordering-policy": Unsupported(
        "ordering policy", "its deadlines come from the latency predictor's SLO headroom",
        "edf-ordering-policy (deadline = arrival + the request's TTL)"),
    "program-score-ordering-policy": Unsupported(
        "ordering policy", "it scores llm-d's program (agent) identity, which llmd's requests "
        "do not carry", "fcfs-ordering-policy or edf-ordering-policy"),
    "priority-holdback-policy": Unsupported(
        "usage-limit policy", "llmd has the static usage limit only",
        "static-usage-limit-policy with a threshold per priority band"),
    "soft-reflective-ceiling-policy": Unsupported(
        "usage-limit policy", "llmd has the static usage limit only",
        "static-usage-limit-policy"),
    "redis-state-store": Unsupported(
        "cross-replica syncer", "llmd's replicas share state without a Redis server",
        "zmq-mesh-syncer"),
}
"""llm-d plugin type → why llmd does not implement it and what to use instead."""


def unsupported_message(plugin_type: str) -> str | None:
    """The error text for an llm-d type llmd does not implement; None for other types."""
    u = UNSUPPORTED.get(plugin_type)
    if u is None:
        return None
    return (f"{plugin_type!r} is an llm-d {u.kind} that llmd does not implement: {u.why}; "
            f"use instead: {u.instead}")
