"""The one exception tree of llmd.

    LlmdError
    ├── ConfigError          a config or values file is wrong (names file, path, value, allowed)
    ├── EngineError          an engine adapter cannot do what was asked (unknown engine, bad page)
    └── RequestError         a request must be answered with an OpenAI-style error
        ├── BadRequestError        400
        ├── NotFoundError          404
        ├── PayloadTooLargeError   413
        ├── RequestShedError       429
        └── NoEndpointError        503

Each `RequestError` carries the HTTP status and the OpenAI error `type`, so every server
(simulator, EPP, sidecar) renders the same JSON body from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar


class LlmdError(Exception):
    """Base of every error llmd raises on purpose."""


class ConfigError(LlmdError):
    """A configuration problem; `problems` holds one readable line per issue."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class EngineError(LlmdError):
    """An engine adapter was asked for something it does not support."""


class RequestError(LlmdError):
    """An error that is answered to an HTTP client as OpenAI-style JSON."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "InternalServerError"

    def __init__(self, message: str, *, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.message = message
        self.param = param
        self.headers: Mapping[str, str] = dict(headers or {})
        """More response headers (lower-case names), such as llm-d's dropped reason."""
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        """The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.status,
            }
        }


class BadRequestError(RequestError):
    status = 400
    error_type = "BadRequestError"


class NotFoundError(RequestError):
    status = 404
    error_type = "NotFoundError"


class PayloadTooLargeError(RequestError):
    status = 413
    error_type = "PayloadTooLargeError"


class RequestShedError(RequestError):
    status = 429
    error_type = "TooManyRequests"


class NoEndpointError(RequestError):
    status = 503
    error_type = "ServiceUnavailable"


def error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error body for a status that has no exception of its own; the `type` is
    `error_type`, else `status_type(status)`."""
    return {
        "error": {
            "message": message,
            "type": error_type or status_type(status),
            "param": None,
            "code": status,
        }
    }


def status_type(status: int) -> str:
    """The OpenAI-style error `type` for an HTTP error status.

    The type of llmd's own exception for 400, 404, 413, 429 and 503; otherwise the status's
    name in CamelCase ending in `Error`, as the OpenAI SDK names its exceptions (405
    `MethodNotAllowedError`, 409 `ConflictError`, 422 `UnprocessableEntityError`, 431
    `RequestHeaderFieldsTooLargeError`, 500 `InternalServerError`). A status `http.HTTPStatus`
    does not know is `ClientError` below 500 and `InternalServerError` from 500.
    """
    known = _TYPE_BY_STATUS.get(status)
    if known is not None:
        return known
    name = _STABLE_NAMES.get(status)
    if name is None:
        try:
            name = HTTPStatus(status).name
        except ValueError:
            return "ClientError" if status < 500 else "InternalServerError"
    camel = "".join(word.capitalize() for word in name.split("_"))
    return camel if camel.endswith("Error") else camel + "Error"


_TYPE_BY_STATUS = {
    cls.status: cls.error_type
    for cls in (
        BadRequestError,
        NotFoundError,
        PayloadTooLargeError,
        RequestShedError,
        NoEndpointError,
    )
}
# Python 3.13 renamed these statuses (RFC 9110); one name on every Python llmd supports.
_STABLE_NAMES = {
    414: "URI_TOO_LONG",
    416: "RANGE_NOT_SATISFIABLE",
    422: "UNPROCESSABLE_ENTITY",
}
