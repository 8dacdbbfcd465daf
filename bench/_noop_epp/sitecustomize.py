"""Loaded by every Python process started with this directory first on PYTHONPATH (bench/
extproc_cost.py's `noop` variants set it for the stack's children): turns the EPP's ext_proc
servicer into the cheapest one grpcio allows, to measure the transport's own cost.

The first request is decided by the real EPP; every later one gets an empty answer to its
headers message and, to its body, that first decision's answer again (one destination, no
parsing, no scheduling, no metrics): what is left is grpcio's asyncio server receiving two
messages, sending two answers and closing the stream, the least any ext_proc picker behind
Envoy's BUFFERED mode does per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


def _install() -> None:
    try:
        from llmd.epp import extproc
    except ImportError:  # not an llmd process
        return
    decide_for_real = extproc.ExtProcServicer.Process
    answer: list[Any] = []

    async def process(self: Any, request_iterator: AsyncIterator[Any], context: Any
                      ) -> AsyncIterator[Any]:
        if not answer:
            async for response in decide_for_real(self, request_iterator, context):
                if response.HasField("request_body"):
                    answer.append(response)
                yield response
            return
        async for msg in request_iterator:
            if msg.HasField("request_headers"):
                yield extproc._HEADERS_NEXT
            else:
                yield answer[0]
                return

    extproc.ExtProcServicer.Process = process  # type: ignore[method-assign]


_install()
