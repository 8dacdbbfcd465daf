"""The decode-first P/D logic shared by `disagg-profile-handler` and its deprecated alias."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from llmd.engines import ENGINES, get_adapter
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint
from llmd.epp.headers import PREFILLER_HEADER
from llmd.epp.plugins.base import Decider, ProfileResult, SchedulingResult
from llmd.epp.plugins.filter._roles import role_of
from llmd.epp.plugins.keys import DECODE_PICK
from llmd.epp.request import InferenceRequest
from llmd.errors import NoEndpointError

if TYPE_CHECKING:
    from llmd.epp.scheduling import SchedulerProfile

log = logging.getLogger(__name__)


def needs_prefill(target: Endpoint) -> bool:
    """A decode-role endpoint whose engine cannot serve a request alone (SGLang decode mode
    needs a bootstrap room on every request) is disaggregated whatever the decider says."""
    if role_of(target) != "decode" or target.spec.engine not in ENGINES:
        return False
    return not get_adapter(target.spec.engine).pd.decode_alone


def _same_engine(decoded: ProfileResult) -> ProfileResult:
    """The decode result with only endpoints of the first target's engine: a retry on another
    decode endpoint must speak the same P/D protocol as the prefill endpoint chosen for the
    first (and, without a prefill, serve alone the way the first would)."""
    first = decoded.targets[0]
    engine = first.spec.engine
    if all(ep.spec.engine == engine for ep in decoded.ranked()):
        return decoded
    return ProfileResult(tuple(ep for ep in decoded.targets if ep.spec.engine == engine),
                         tuple(ep for ep in decoded.alternates if ep.spec.engine == engine))


class DecodeFirst:
    """Decode profile first (primary), then the prefill profile when the decider approves.

    Subclasses set the profile names, the decider name and the parameter paths naming them
    (used in the loader's error messages).
    """

    name: str
    produces: ClassVar[DataKeys] = (DECODE_PICK,)
    consumes: ClassVar[DataKeys] = ()
    max_profiles: ClassVar[None] = None  # the profiles it names (profile_refs) are checked

    def __init__(self, decode: str, prefill: str, decider: str | None,
                 paths: tuple[str, str, str]) -> None:
        self.decode_profile, self.prefill_profile, self.decider_ref = decode, prefill, decider
        self._paths = paths
        self.decider: Decider | None = None
        self._prefill_missing = False  # log the change of state, not every request

    def profile_refs(self) -> Mapping[str, str]:
        decode_path, prefill_path, _ = self._paths
        refs = {decode_path: self.decode_profile}
        if self.decider_ref is not None:
            refs[prefill_path] = self.prefill_profile
        return refs

    def decider_refs(self) -> Mapping[str, str]:
        return {} if self.decider_ref is None else {self._paths[2]: self.decider_ref}

    def bind(self, deciders: Mapping[str, Decider]) -> None:
        self.decider = deciders.get(self._paths[2])

    def pick(
        self,
        request: InferenceRequest,
        profiles: Mapping[str, SchedulerProfile],
        results: Mapping[str, ProfileResult | None],
    ) -> Mapping[str, SchedulerProfile]:
        decode, prefill = self.decode_profile, self.prefill_profile
        if decode not in results:
            return {decode: profiles[decode]}
        decoded = results[decode]
        if (decoded is None or self.decider is None or prefill in results
                or prefill not in profiles):
            return {}
        target = decoded.targets[0]
        if needs_prefill(target) or self.decider.disaggregate(request, target):
            # For `decode-engine-filter`: a mixed-engine pool pairs like with like.
            request.state.put(DECODE_PICK, target)
            return {prefill: profiles[prefill]}
        return {}

    def process_results(
        self, request: InferenceRequest, results: Mapping[str, ProfileResult | None]
    ) -> SchedulingResult | None:
        decoded = results.get(self.decode_profile)
        if decoded is None:
            return None
        chosen = {self.decode_profile: _same_engine(decoded)}
        headers: dict[str, str] = {}
        prefilled = results.get(self.prefill_profile)
        if prefilled is not None:
            chosen[self.prefill_profile] = prefilled
            # Best first, `[v6]:port` for IPv6; the sidecar tries the next when one refuses.
            headers[PREFILLER_HEADER] = ",".join(ep.id for ep in prefilled.ranked())
        if self.prefill_profile in results:
            self._note_prefill(request, found=prefilled is not None)
            target = decoded.targets[0]
            if prefilled is None and needs_prefill(target):
                raise NoEndpointError(
                    f"no prefill endpoint can serve the request, and decode endpoint "
                    f"{target.id} ({target.spec.engine}) cannot serve it without one")
        return SchedulingResult(chosen, primary=self.decode_profile, headers=headers)

    def _note_prefill(self, request: InferenceRequest, *, found: bool) -> None:
        if not found:
            log.debug("%s: no prefill endpoint; decode only", request.request_id)
        if found == self._prefill_missing:
            self._prefill_missing = not found
            if found:
                log.info("%s: profile %r finds prefill endpoints again", self.name,
                         self.prefill_profile)
            else:
                log.warning("%s: profile %r finds no prefill endpoint; disaggregated requests "
                            "run decode only", self.name, self.prefill_profile)
