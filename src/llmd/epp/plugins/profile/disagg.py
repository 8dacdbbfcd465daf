"""`disagg-profile-handler`: llm-d's P/D scheduling, decode first.

Per request: run the decode profile (primary: its endpoint is the destination); if it found no
endpoint, stop (503). Otherwise ask the prefill decider (`deciders.prefill`) about the chosen decode
endpoint; on yes, run the prefill profile and send its endpoint to the decode pod's sidecar in
`x-prefiller-host-port`. Without `deciders.prefill` every request is decode only. When the prefill
profile finds no endpoint the request still goes to the decode endpoint, decode only, as
llm-d-inference-scheduler did (llm-d-router fails such requests since its PR #2521).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from llmd.config import LlmdModel
from llmd.epp.plugins.profile._disagg import DecodeFirst

__all__ = ["DisaggProfileHandler"]


def _no_encode(data: Any) -> Any:
    if isinstance(data, dict) and "encode" in data:
        raise ValueError("llmd schedules no encode stage (E/P/D); give decode and prefill")
    return data


class _Profiles(LlmdModel):
    decode: str = Field(default="decode", min_length=1)
    prefill: str = Field(default="prefill", min_length=1)

    _encode = model_validator(mode="before")(_no_encode)

    @model_validator(mode="after")
    def _distinct(self) -> _Profiles:
        if self.decode == self.prefill:
            raise ValueError(f"decode and prefill must be different profiles (both are "
                             f"{self.decode!r})")
        return self


class _Deciders(LlmdModel):
    prefill: str | None = Field(default=None, min_length=1,
                                description="decider plugin name; unset = decode only")

    _encode = model_validator(mode="before")(_no_encode)


class DisaggProfileHandler(DecodeFirst):
    type: ClassVar[str] = "disagg-profile-handler"

    class Params(LlmdModel):
        profiles: _Profiles = Field(default_factory=_Profiles)
        deciders: _Deciders = Field(default_factory=_Deciders)

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        super().__init__(params.profiles.decode, params.profiles.prefill,
                         params.deciders.prefill,
                         ("profiles.decode", "profiles.prefill", "deciders.prefill"))
