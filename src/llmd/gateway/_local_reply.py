"""Envoy's own error replies in the OpenAI error shape (`local_reply_config`).

Envoy answers some requests itself: a header block too large (431), a body over the buffer
limit (413), a client too slow to send its request (408), every upstream attempt refused (503),
an upstream that resets mid-request (502/503), HTTP it cannot parse (400). Without this config
those bodies are plain text (`upstream connect error or disconnect/reset before headers...`); an
OpenAI client then fails to parse the error. Each status gets a mapper that rewrites the body
to `{"error": {"message": <Envoy's text>, "type": <by status>, "param": null, "code": <status>}}`
with `content-type: application/json`.

Two kinds of local reply already carry that JSON and are left alone: the EPP's ext_proc
ImmediateResponses (their `details` start with `llmd_`) and the FailClose route's
`direct_response`. A CEL filter on `response.code_details` tells them apart: Envoy has no
cheaper filter that sees the details, and status or response flags cannot distinguish an EPP
400 from a codec 400.
"""

from __future__ import annotations

from typing import Any

from llmd.errors import error_body

__all__ = ["IMMEDIATE_DETAILS_PREFIX", "local_reply_config"]

IMMEDIATE_DETAILS_PREFIX = "llmd_"
"""What the EPP's ImmediateResponse `details` start with (`llmd_epp_<status>`)."""

_T = "type.googleapis.com/envoy."
# Statuses Envoy itself generates in front of an inference pool; any other 5xx or 4xx gets its
# class's type (InternalServerError, BadRequestError).
_STATUSES = (400, 403, 404, 405, 408, 411, 413, 414, 426, 429, 431, 500, 501, 502, 503, 504)
_OURS = (f"response.code_details.startsWith('{IMMEDIATE_DETAILS_PREFIX}') || "
         "response.code_details == 'direct_response'")


def local_reply_config() -> dict[str, Any]:
    """The HCM's `local_reply_config`: one mapper per status, then catch-alls for the other
    5xx and 4xx statuses."""
    mappers = [_mapper(f"response.code == {status}", error_body(status, "")["error"]["type"])
               for status in _STATUSES]
    mappers.append(_mapper("response.code >= 500", error_body(500, "")["error"]["type"]))
    mappers.append(_mapper("response.code >= 400", error_body(400, "")["error"]["type"]))
    return {"mappers": mappers}


def _mapper(condition: str, error_type: str) -> dict[str, Any]:
    return {
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": _T + "extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": f"{condition} && !({_OURS})",
            }}},
        "body_format_override": {
            "json_format": {"error": {
                "message": "%LOCAL_REPLY_BODY%",
                "type": error_type,
                "param": None,
                "code": "%RESPONSE_CODE%",  # a lone operator: Envoy renders it as a number
            }},
            "content_type": "application/json",
        },
    }
