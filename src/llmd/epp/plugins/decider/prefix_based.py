"""`prefix-based-pd-decider`: disaggregate when the prompt's uncached part on the chosen decode
endpoint is at least `nonCachedTokens` tokens.

As in llm-d: tokens are estimated as UTF-8 bytes / 4 of the prompt the prefix index hashes (the
completions text, the compact JSON of chat `messages`), unless the producer tokenized the prompt
(the precise index: `PrefixMatch.prompt_tokens`), whose count is then exact; cached tokens
are the decode endpoint's matched blocks × block size in tokens, from `PREFIX_MATCH` (filled by
`approx-prefix-cache-producer`, created with its defaults when the config declares no producer
of it, or by another prefix index). `nonCachedTokens: 0` (the default) turns the
decider off: nothing is disaggregated (llm-d-router's current meaning; the older
llm-d-inference-scheduler disaggregated everything at 0). `prefixMatchInfoProducerName` (llmd
only) may name the producer of `PREFIX_MATCH`; the loader checks it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import Endpoint
from llmd.epp.plugins._prefix_refs import PrefixProducerParams
from llmd.epp.plugins.base import ProducerRef
from llmd.epp.plugins.keys import PREFIX_MATCH
from llmd.epp.request import InferenceRequest

__all__ = ["CHARS_PER_TOKEN", "PrefixBasedPdDecider", "estimated_tokens"]

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
"""llm-d's AverageCharactersPerToken: the prompt is not tokenized for this decision."""


def estimated_tokens(request: InferenceRequest) -> int:
    return len(request.prompt.encode()) // CHARS_PER_TOKEN


class PrefixBasedPdDecider:
    type: ClassVar[str] = "prefix-based-pd-decider"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = (PREFIX_MATCH,)

    class Params(PrefixProducerParams):
        non_cached_tokens: int = Field(
            default=0, ge=0, description="uncached prompt tokens on the decode endpoint that "
            "make a request disaggregated; 0 = never")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def producer_refs(self) -> Sequence[ProducerRef]:
        return self.params.producer_refs()

    def disaggregate(self, request: InferenceRequest, endpoint: Endpoint) -> bool:
        threshold = self.params.non_cached_tokens
        if threshold == 0:
            return False
        match = request.state.get(PREFIX_MATCH)
        total = (match.prompt_tokens if match is not None and match.prompt_tokens is not None
                 else estimated_tokens(request))
        if total < threshold:
            return False
        if match is None:  # llm-d: no match info → decode only
            log.debug("%s: no prefix match info; not disaggregating", request.request_id)
            return False
        uncached = total - match.cached_tokens(endpoint.id)
        log.debug("%s: %d of ~%d prompt tokens uncached on %s (threshold %d)",
                  request.request_id, max(uncached, 0), total, endpoint.id, threshold)
        return uncached >= threshold
