"""The exception tree's OpenAI error bodies: every status gets a type that says what it is."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from llmd.errors import (
    BadRequestError,
    NoEndpointError,
    NotFoundError,
    PayloadTooLargeError,
    RequestShedError,
    error_body,
    status_type,
)


@pytest.mark.parametrize(("status", "expected"), [
    pytest.param(400, "BadRequestError", id="400-own-class"),
    pytest.param(404, "NotFoundError", id="404-own-class"),
    pytest.param(413, "PayloadTooLargeError", id="413-own-class"),
    pytest.param(429, "TooManyRequests", id="429-own-class"),
    pytest.param(503, "ServiceUnavailable", id="503-own-class"),
    pytest.param(500, "InternalServerError", id="500"),
    pytest.param(401, "UnauthorizedError", id="401"),
    pytest.param(405, "MethodNotAllowedError", id="405"),
    pytest.param(409, "ConflictError", id="409"),
    pytest.param(414, "UriTooLongError", id="414-same-name-on-every-python"),
    pytest.param(422, "UnprocessableEntityError", id="422-openai-sdk-name"),
    pytest.param(431, "RequestHeaderFieldsTooLargeError", id="431"),
    pytest.param(501, "NotImplementedError", id="501"),
    pytest.param(502, "BadGatewayError", id="502"),
    pytest.param(504, "GatewayTimeoutError", id="504"),
    pytest.param(499, "ClientError", id="unknown-4xx"),
    pytest.param(599, "InternalServerError", id="unknown-5xx"),
])
def test_status_type(status: int, expected: str) -> None:
    assert status_type(status) == expected
    assert error_body(status, "m") == {
        "error": {"message": "m", "type": expected, "param": None, "code": status}}


def test_no_error_status_is_called_internal_unless_it_is_5xx() -> None:
    for status in HTTPStatus:
        if 400 <= status < 500:
            assert "InternalServer" not in status_type(status), status


def test_own_exceptions_and_error_body_agree() -> None:
    for cls in (BadRequestError, NotFoundError, PayloadTooLargeError, RequestShedError,
                NoEndpointError):
        assert cls("x").body() == error_body(cls.status, "x")


def test_explicit_type_wins() -> None:
    assert error_body(401, "no", "AuthenticationError")["error"]["type"] == "AuthenticationError"
