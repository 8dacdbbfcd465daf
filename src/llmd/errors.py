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

    def __init__(self, message: str, *, param: str | None = None) -> None:
        self.message = message
        self.param = param
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
    """An OpenAI-style error body for a status that has no exception of its own."""
    return {
        "error": {
            "message": message,
            "type": error_type or _TYPE_BY_STATUS.get(status, "InternalServerError"),
            "param": None,
            "code": status,
        }
    }


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
