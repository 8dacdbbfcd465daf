"""One request from headers + body to a decision: parse, admit, schedule (GIE's Director).

The config's parser reads the body (`openai-parser` by default). Errors are `RequestError`s the
ext_proc server turns into immediate responses: 400 for a body the parser cannot read, 503 when
no endpoint can serve, 429 when a sheddable request (priority < 0) meets a saturated pool
(llm-d's legacy admission; with the `flowControl` feature gate, `flow_control` queues requests
before they get here instead).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmd.epp._openai import headers_only_request
from llmd.epp.config import EndpointPickerConfig
from llmd.epp.datastore import Datastore, PoolSnapshot
from llmd.epp.inflight import InflightLedger
from llmd.epp.metrics import EppMetrics
from llmd.epp.plugins.base import ProfileResult, SchedulingResult
from llmd.epp.request import InferenceRequest
from llmd.errors import NoEndpointError, RequestError, RequestShedError

__all__ = ["Decision", "Director"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes; `response_headers` are for the client's response (session token)."""

    request: InferenceRequest
    result: SchedulingResult
    pool: PoolSnapshot
    response_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.result.destination.id

    @property
    def destination_value(self) -> str:
        """`x-gateway-destination-endpoint`: the destination, then its fallbacks, comma
        separated (GIE's multi-endpoint form; a single `ip:port` without fallbacks)."""
        return ",".join(ep.id for ep in self.result.destinations)


class Director:
    def __init__(
        self,
        store: Datastore,
        config: EndpointPickerConfig,
        metrics: EppMetrics | None = None,
        objectives: Mapping[str, int] | None = None,
        rng: random.Random | None = None,
        fallback_endpoints: int = 0,
        inflight: InflightLedger | None = None,
    ) -> None:
        self.store, self.config, self.metrics = store, config, metrics
        self.inflight = inflight
        self.objectives = dict(config.objectives) | dict(objectives or {})
        self.rng = rng or random.Random()
        self.fallback_endpoints = fallback_endpoints
        config.scheduler.alternates = fallback_endpoints
        if metrics is not None:
            config.scheduler.timer = metrics.observe_plugin

    def parse(
        self, request_id: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> InferenceRequest:
        """The request as the config's parser reads it; BadRequestError (400). `body` None:
        headers only."""
        if body is None:
            return headers_only_request(request_id, path, headers, self.objectives)
        return self.config.parser.parse(request_id, path, headers, body, self.objectives)

    def decide(
        self, request_id: str, path: str, headers: Mapping[str, str], body: bytes | None,
        request: InferenceRequest | None = None,
    ) -> Decision:
        """Route one request; raises RequestError (400/429/503). `body` None: headers only;
        `request`: already parsed (by flow control's admission)."""
        started = time.perf_counter()
        outcome, endpoint = "error", ""
        try:
            if request is None:
                request = self.parse(request_id, path, headers, body)
            decision = self._decide(request, body is None)
            outcome, endpoint = "routed", decision.endpoint
            return decision
        except RequestError as exc:
            outcome = _OUTCOMES.get(exc.status, "error")
            raise
        finally:
            if self.metrics is not None:
                self.metrics.decision_seconds.observe(time.perf_counter() - started)
                self.metrics.decisions.labels(endpoint, outcome).inc()

    def _decide(self, request: InferenceRequest, headers_only: bool) -> Decision:
        pool = self.store.snapshot()
        if not pool.candidates:
            down = len(pool.members or ())
            raise NoEndpointError(
                f"no healthy endpoint in the inference pool: all {down} are unreachable or "
                "their metrics are stale" if down else
                "no endpoint in the inference pool can serve the request")
        if request.priority < 0 and self.config.flow_control is None:  # else: flow control
            saturation = self.config.detector.saturation(pool)
            if self.metrics is not None:
                self.metrics.saturation.set(saturation)
            if saturation >= 1.0:
                raise RequestShedError(
                    f"the inference pool is saturated; request with objective "
                    f"{request.objective!r} (priority {request.priority}) was shed"
                )
        scheduler = self.config.scheduler
        if headers_only:  # llm-d sends body-less requests to a random endpoint
            picked = self.rng.sample(pool.candidates,
                                     min(len(pool.candidates), 1 + self.fallback_endpoints))
            result = SchedulingResult(
                {"default": ProfileResult((picked[0],), tuple(picked[1:]))}, primary="default")
        else:
            scheduled = scheduler.schedule(request, pool)
            if scheduled is None:
                raise NoEndpointError("no endpoint in the inference pool can serve the request")
            result = scheduled
        log.debug("%s → %s", request.request_id, result.destination.id)
        return Decision(request, result, pool, scheduler.response_headers(request, result))

    def after_decision(self, decision: Decision) -> None:
        """PreRequest hooks and in-flight accounting, once the answer is on its way to Envoy."""
        if self.inflight is not None:
            result = decision.result
            self.inflight.picked(result.destination.id)
            for name, r in result.results.items():  # P/D: the prefill endpoint works too
                if name != result.primary and r.targets:
                    self.inflight.picked(r.targets[0].id)
        if len(decision.request.state):  # a scheduled request (body-less ones are not)
            self.config.scheduler.after_decision(decision.request, decision.result, decision.pool)


_OUTCOMES = {400: "bad_request", 413: "bad_request", 429: "shed", 503: "no_endpoint"}
