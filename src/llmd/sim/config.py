"""`llmd sim` settings: every knob of the engine model is a flag (flags map 1:1 onto fields)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from llmd.config import LlmdModel
from llmd.engines import EngineName, KvEventsSettings, Role, get_adapter
from llmd.errors import ConfigError

__all__ = ["FAILURE_KINDS", "FailureKind", "SimConfig"]

FailureKind = Literal[
    "rate_limit", "server_error", "invalid_api_key", "context_length", "invalid_request",
    "model_not_found",
]
# llm-d-inference-sim's failure types and the status each one answers with.
FAILURE_KINDS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "RateLimitError", "Rate limit reached (injected failure)"),
    "server_error": (503, "ServiceUnavailableError", "The server is overloaded (injected failure)"),
    "invalid_api_key": (401, "AuthenticationError",
                        "Incorrect API key provided (injected failure)"),
    "context_length": (400, "BadRequestError",
                       "This model's maximum context length is exceeded (injected failure)"),
    "invalid_request": (400, "BadRequestError", "Invalid request (injected failure)"),
    "model_not_found": (404, "NotFoundError", "The model does not exist (injected failure)"),
}


class SimConfig(LlmdModel):
    """One simulated model server speaking `engine`'s dialect.

    Latency model (all durations multiplied by `time_scale`; 0 disables every sleep):
    TTFT = queue wait + `prefill_overhead_ms` + `prefill_per_token_ms` x uncached prompt tokens;
    each later token waits `itl_ms` + `itl_per_seq_ms` x sequences running at that step.
    Without `ignore_eos` a choice ends at a seeded "EOS" length drawn uniformly from
    [`eos_min_tokens`, `eos_max_tokens`] (or earlier at `max_tokens` or a stop string).

    P/D (`role` prefill or decode; "both" ignores P/D fields as an engine without a KV
    connector does): a decode leg whose KV arrives from the prefill server pays
    `kv_transfer_overhead_ms` + `kv_transfer_per_token_ms` x transferred tokens instead of the
    prefill cost. vLLM prefill servers hold a leg's blocks for `kv_hold_s` (real seconds);
    SGLang prefill servers run the bootstrap server on `bootstrap_port`, and either side gives
    up on its peer after `bootstrap_timeout_s`.

    `kv_events_config` publishes KV events (`kv_events`) as the engine does with the same
    `--kv-events-config` (vLLM: `enable_kv_cache_events`; SGLang: publisher `zmq`).
    """

    engine: EngineName = "vllm"
    model: str = "llmd-sim"
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, lt=65536, description="listen port; 0 picks a free one")
    tokenizer: str | None = Field(None, description="tokenizer.json path; None = built-in")
    block_size: int = Field(16, ge=1, le=1024, description="tokens per KV block (SGLang: page)")
    kv_cache_blocks: int = Field(8192, ge=1, description="KV blocks (SGLang: pages)")
    max_model_len: int = Field(8192, ge=2, description="prompt + output tokens per sequence")
    max_num_seqs: int = Field(256, ge=1, description="sequences running at once")
    max_waiting: int = Field(1024, ge=0, description="waiting-queue bound; beyond it 429")
    prefill_overhead_ms: float = Field(10.0, ge=0)
    prefill_per_token_ms: float = Field(0.05, ge=0, description="per uncached prompt token")
    itl_ms: float = Field(8.0, ge=0, description="inter-token latency of a lone sequence")
    itl_per_seq_ms: float = Field(0.1, ge=0, description="added ITL per running sequence")
    time_scale: float = Field(1.0, ge=0, description="multiplies every latency; 0 = none")
    eos_min_tokens: int = Field(16, ge=1)
    eos_max_tokens: int = Field(256, ge=1)
    seed: int = 0
    failure_rate: float = Field(0.0, ge=0, le=1,
                                description="fraction of generation requests failed")
    failure_kinds: tuple[FailureKind, ...] = ("rate_limit", "server_error")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0)
    drain_timeout_s: float = Field(5.0, ge=0, description="grace for in-flight requests at stop")
    role: Role = "both"
    kv_transfer_overhead_ms: float = Field(1.0, ge=0)
    kv_transfer_per_token_ms: float = Field(0.005, ge=0, description="per transferred token")
    kv_hold_s: float = Field(
        60.0, gt=0, description="vLLM prefill: how long blocks wait for their decode leg "
        "(vLLM's VLLM_NIXL_ABORT_REQUEST_TIMEOUT is 480 s)")
    bootstrap_port: int = Field(8998, ge=0, lt=65536,
                                description="SGLang prefill bootstrap port; 0 picks a free one")
    bootstrap_timeout_s: float = Field(30.0, gt=0,
                                       description="SGLang: how long a leg waits for its peer")
    kv_pull_timeout_s: float = Field(5.0, gt=0, description="vLLM decode: one pull's timeout")
    kv_events_config: KvEventsSettings | None = Field(
        None, description="the engine's --kv-events-config (JSON text or object), validated "
        "by the engine's own model: KV events on a ZMQ PUB socket, as the engine publishes")

    @field_validator("kv_events_config", mode="before")
    @classmethod
    def _engine_kv_events(cls, raw: Any, info: ValidationInfo) -> Any:
        if raw is None or isinstance(raw, KvEventsSettings):
            return raw
        engine = info.data.get("engine")
        if engine is None:
            return raw  # the engine itself failed validation; that error is reported
        if not isinstance(raw, str | dict):
            raise ValueError("expected the engine's --kv-events-config JSON")
        try:
            return get_adapter(engine).kv_events.parse_config(raw)
        except ConfigError as exc:
            raise ValueError("; ".join(exc.problems)) from None

    @model_validator(mode="after")
    def _consistent(self) -> SimConfig:
        if self.eos_min_tokens > self.eos_max_tokens:
            raise ValueError(f"eos_min_tokens ({self.eos_min_tokens}) must be <= eos_max_tokens "
                             f"({self.eos_max_tokens})")
        capacity = self.kv_cache_blocks * self.block_size
        if self.max_model_len > capacity:
            raise ValueError(f"max_model_len ({self.max_model_len}) exceeds the KV cache "
                             f"({self.kv_cache_blocks} blocks x {self.block_size} tokens = "
                             f"{capacity}); raise kv_cache_blocks or lower max_model_len")
        if self.failure_rate > 0 and not self.failure_kinds:
            raise ValueError("failure_rate > 0 needs at least one failure kind")
        return self

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model
