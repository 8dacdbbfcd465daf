"""`pd-profile-handler`: llm-d's deprecated name for `disagg-profile-handler`, with its old flat
parameters. Loading it logs a warning naming the replacement (the registry's `deprecated`).

`deciderPluginName` defaults to `prefix-based-pd-decider`, which must be declared, as in llm-d.
`prefixPluginType`/`prefixPluginName` name where prefix-match data comes from, as on
`no-hit-lru-scorer` (see `_prefix_refs`): llm-d never used them, llmd checks them (a name that
is not a producer of prefix-match or a prefix scorer is an error); `primaryPort` (the
data-parallel port rewrite) is not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, model_validator

from llmd.epp.plugins._prefix_refs import PrefixPluginParams
from llmd.epp.plugins.base import ProducerRef
from llmd.epp.plugins.profile._disagg import DecodeFirst

__all__ = ["PdProfileHandler"]


class PdProfileHandler(DecodeFirst):
    type: ClassVar[str] = "pd-profile-handler"

    class Params(PrefixPluginParams):
        decode_profile: str = Field(default="decode", min_length=1)
        prefill_profile: str = Field(default="prefill", min_length=1)
        decider_plugin_name: str = Field(default="prefix-based-pd-decider", min_length=1)

        @model_validator(mode="after")
        def _distinct(self) -> PdProfileHandler.Params:
            if self.decode_profile == self.prefill_profile:
                raise ValueError("decodeProfile and prefillProfile must be different profiles "
                                 f"(both are {self.decode_profile!r})")
            return self

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        super().__init__(params.decode_profile, params.prefill_profile,
                         params.decider_plugin_name,
                         ("decodeProfile", "prefillProfile", "deciderPluginName"))

    def producer_refs(self) -> Sequence[ProducerRef]:
        return self.params.producer_refs()
