"""`metrics-data-source`: the URL the scraper polls on every endpoint (`scheme://ip:port/path`).

Parameters as llm-d's (`scheme` http, `path` /metrics, `insecureSkipVerify` true: llm-d skips
certificate checks by default because model servers behind a pool rarely have certificates for
their pod IPs).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys

__all__ = ["MetricsDataSource"]


class MetricsDataSource:
    type: ClassVar[str] = "metrics-data-source"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        scheme: Literal["http", "https"] = "http"
        path: str = "/metrics"
        insecure_skip_verify: bool = Field(
            True, description="with https, do not verify the model server's certificate")

        @field_validator("path")
        @classmethod
        def _absolute(cls, value: str) -> str:
            if not value.startswith("/") or any(c.isspace() for c in value):
                raise ValueError("must be a URL path starting with '/', e.g. /metrics")
            return value

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params
        self.scheme: str = params.scheme
        self.path: str = params.path
        self.verify_tls: bool = not params.insecure_skip_verify
