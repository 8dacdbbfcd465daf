"""`prefix-cache-affinity-filter`: keep the "sticky" endpoints, those holding at least
`affinityThreshold` of the request's prefix (`PREFIX_MATCH`), unless they are too loaded.

As llm-d's (the v1.0 guides' default, "sticky until saturated"):

- no sticky endpoint, or every candidate sticky: all are kept;
- with probability `explorationProbability` the gate is skipped (seeds caches elsewhere);
- TTFT gate: each endpoint's wait is its in-flight tokens / its `peakPrefillThroughput`
  (`INFLIGHT_LOAD`); when the best sticky endpoint's exceeds the best non-sticky one's by more
  than `maxTTFTPenaltyMs`, stickiness breaks and all are kept (0: the gate is off);
- token gate (`maxTokensInFlightPenalty`, the guides' τ in tokens): the same comparison on
  in-flight tokens (0: off);
- otherwise only the sticky endpoints go on to the scorers.

`peakPrefillThroughput` is a number (llm-d) or per engine type and endpoint (llmd, see
`llmd.epp.plugins._throughput`): in a mixed pool an SGLang endpoint that prefills twice as
fast breaks stickiness at twice the tokens. `ttftSource: latencyPredictor` and the calibration
record parameters need parts of llm-d llmd does not run, and fail at load naming what to use.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint, PoolSnapshot
from llmd.epp.plugins._prefix_refs import PrefixProducerParams
from llmd.epp.plugins._throughput import PrefillThroughput
from llmd.epp.plugins.base import ProducerRef
from llmd.epp.plugins.keys import INFLIGHT_LOAD, PREFIX_MATCH, InflightLoad
from llmd.epp.request import InferenceRequest

__all__ = ["PrefixCacheAffinityFilter"]

_CALIBRATE = ("llmd reads no calibration record: measure with `llmd calibrate --endpoint URL` "
              "and set peakPrefillThroughput")


class PrefixCacheAffinityFilter:
    type: ClassVar[str] = "prefix-cache-affinity-filter"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (PREFIX_MATCH, INFLIGHT_LOAD)

    class Params(PrefixProducerParams):
        affinity_threshold: float = Field(default=0.80, ge=0, le=1, description="prefix "
                                          "share that makes an endpoint sticky")
        exploration_probability: float = Field(default=0.0, ge=0, le=1)
        max_ttft_penalty_ms: float = Field(
            default=18000, ge=0, alias="maxTTFTPenaltyMs", description="extra prefill wait "
            "(ms) on the best sticky endpoint that breaks stickiness; 0 = off")
        max_tokens_in_flight_penalty: int = Field(
            default=0, ge=0, description="extra in-flight tokens on the best sticky endpoint "
            "that break stickiness; 0 = off")
        ttft_source: Literal["prefillThroughput", "latencyPredictor"] = "prefillThroughput"
        peak_prefill_throughput: PrefillThroughput = Field(
            default_factory=PrefillThroughput, description="prefill tokens/s: a number, or "
            "per engine / endpoint")
        prefill_calibration_file: str | None = None
        prefill_calibration_fingerprint: str | None = None
        prefill_calibration_required: bool = False

        @field_validator("ttft_source")
        @classmethod
        def _no_predictor(cls, value: str) -> str:
            if value == "latencyPredictor":
                raise ValueError("'latencyPredictor' needs llm-d's latency-predictor sidecars, "
                                 "which llmd does not run; use 'prefillThroughput' with a "
                                 "measured peakPrefillThroughput (`llmd calibrate`)")
            return value

        @field_validator("prefill_calibration_file", "prefill_calibration_fingerprint")
        @classmethod
        def _no_record(cls, value: str | None) -> str | None:
            if value is not None:
                raise ValueError(_CALIBRATE)
            return value

        @field_validator("prefill_calibration_required")
        @classmethod
        def _no_required(cls, value: bool) -> bool:
            if value:
                raise ValueError(_CALIBRATE)
            return value

    def __init__(self, name: str, params: Params, rng: random.Random | None = None) -> None:
        self.name, self.params = name, params
        self.rng = rng or random.Random()

    def producer_refs(self) -> Sequence[ProducerRef]:
        return self.params.producer_refs()

    def filter(self, request: InferenceRequest, pool: PoolSnapshot) -> Sequence[Endpoint]:
        candidates = pool.candidates
        match = request.state.get(PREFIX_MATCH)
        if match is None:
            return candidates
        threshold = self.params.affinity_threshold
        sticky = [ep for ep in candidates if match.ratio(ep.id) >= threshold]
        if not sticky or len(sticky) == len(candidates):
            return candidates
        p = self.params.exploration_probability
        if p and self.rng.random() < p:
            return candidates
        load = request.state.get(INFLIGHT_LOAD)
        if load is None:
            return candidates  # llm-d's missing_signal: no gate, keep all
        others = [ep for ep in candidates if match.ratio(ep.id) < threshold]
        if self._overloaded(sticky, others, load):
            return candidates
        return sticky

    def _overloaded(self, sticky: list[Endpoint], others: list[Endpoint],
                    load: InflightLoad) -> bool:
        ms = self.params.max_ttft_penalty_ms
        if ms:
            rates = self.params.peak_prefill_throughput

            def wait_ms(ep: Endpoint) -> float:
                return load.of(ep.id).tokens / rates.of(ep) * 1000.0

            if min(map(wait_ms, sticky)) - min(map(wait_ms, others)) > ms:
                return True
        tau = self.params.max_tokens_in_flight_penalty
        if tau:
            def tokens(ep: Endpoint) -> float:
                return load.of(ep.id).tokens

            if min(map(tokens, sticky)) - min(map(tokens, others)) > tau:
                return True
        return False
