"""The scheduler: profile handler → per profile filters → weighted scorers → picker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter

from llmd.epp.datastore import PoolSnapshot
from llmd.epp.plugins.base import (
    DataProducer,
    Filter,
    Picker,
    PreRequest,
    ProfileHandler,
    ProfileResult,
    ResponseHeaderHook,
    SchedulingResult,
    Scorer,
)
from llmd.epp.request import InferenceRequest

__all__ = ["PluginTimer", "Scheduler", "SchedulerProfile", "WeightedScorer"]

log = logging.getLogger(__name__)

PluginTimer = Callable[[str, float], None]
"""Receives (plugin name, seconds) for every plugin call the framework makes."""


def _ignore(name: str, seconds: float) -> None:
    return None


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(frozen=True, slots=True)
class SchedulerProfile:
    """One scheduling profile (`schedulingProfiles[]` in the config)."""

    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[WeightedScorer, ...]
    picker: Picker
    fallback: SchedulerProfile | None = None
    """`fallbackProfile`: runs instead when this profile leaves no candidate."""

    def run(self, request: InferenceRequest, pool: PoolSnapshot,
            timer: PluginTimer = _ignore, alternates: int = 0) -> ProfileResult | None:
        """Filter, score and pick, timing each plugin; None when no candidate is left.

        `alternates`: how many of the best remaining candidates (by total score) to return
        besides the picker's targets."""
        for f in self.filters:
            t0 = perf_counter()
            kept = f.filter(request, pool)
            timer(f.name, perf_counter() - t0)
            if not kept:
                log.debug("%s: filter %s left no candidate", request.request_id, f.name)
                return None
            pool = pool.with_candidates(kept)
        candidates = pool.candidates
        totals = dict.fromkeys((ep.id for ep in candidates), 0.0)
        for ws in self.scorers:
            t0 = perf_counter()
            scores = ws.scorer.score(request, pool)
            timer(ws.scorer.name, perf_counter() - t0)
            weight = ws.weight
            for ep_id, value in scores.items():
                if ep_id in totals:
                    clamped = 0.0 if value < 0.0 else 1.0 if value > 1.0 else value
                    totals[ep_id] += weight * clamped
        scored = [(ep, totals[ep.id]) for ep in candidates]
        t0 = perf_counter()
        targets = self.picker.pick(request, scored)
        timer(self.picker.name, perf_counter() - t0)
        if not targets:
            return None
        if alternates <= 0 or len(scored) <= len(targets):
            return ProfileResult(targets)
        chosen = {ep.id for ep in targets}
        rest = sorted((item for item in scored if item[0].id not in chosen),
                      key=lambda item: item[1], reverse=True)
        return ProfileResult(targets, tuple(ep for ep, _ in rest[:alternates]))


class Scheduler:
    """Runs one request through producers and profiles; hooks run after the answer is sent."""

    def __init__(
        self,
        handler: ProfileHandler,
        profiles: Mapping[str, SchedulerProfile],
        producers: Sequence[DataProducer] = (),
        hooks: Sequence[PreRequest] = (),
        response_hooks: Sequence[ResponseHeaderHook] = (),
    ) -> None:
        self.handler = handler
        self.profiles = dict(profiles)
        self.producers = tuple(producers)
        self.hooks = tuple(hooks)
        self.response_hooks = tuple(response_hooks)
        self.timer: PluginTimer = _ignore
        self.alternates = 0
        """Fallback endpoints each profile returns besides its targets (the EPP's
        `--fallback-endpoints`)."""

    def schedule(self, request: InferenceRequest, pool: PoolSnapshot) -> SchedulingResult | None:
        """The decision for `request`; None when no endpoint can serve it."""
        timer = self.timer
        for producer in self.producers:
            t0 = perf_counter()
            producer.produce(request, pool)
            timer(producer.name, perf_counter() - t0)
        results: dict[str, ProfileResult | None] = {}
        for _ in range(len(self.profiles) + 1):  # a handler never needs more rounds
            todo = self.handler.pick(request, self.profiles, results)
            if not todo:
                break
            for name, profile in todo.items():
                result = profile.run(request, pool, timer, self.alternates)
                if result is None and profile.fallback is not None:
                    result = profile.fallback.run(request, pool, timer, self.alternates)
                results[name] = result
        return self.handler.process_results(request, results)

    def response_headers(
        self, request: InferenceRequest, result: SchedulingResult
    ) -> dict[str, str]:
        """Headers for the client's response that the decision implies (empty: none)."""
        out: dict[str, str] = {}
        for hook in self.response_hooks:
            out.update(hook.response_headers(request, result))
        return out

    def after_decision(
        self, request: InferenceRequest, result: SchedulingResult, pool: PoolSnapshot
    ) -> None:
        """Run PreRequest hooks (index updates); a failing hook is logged, never fatal."""
        for hook in self.hooks:
            try:
                hook.pre_request(request, result, pool)
            except Exception:  # a broken index must not take routing down
                log.exception("pre-request hook %s failed", hook.name)
