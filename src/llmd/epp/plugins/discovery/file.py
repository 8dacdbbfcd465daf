"""`file-discovery`: the pool's endpoints from a YAML or JSON file (llm-d's format:
`endpoints: [{name, namespace, address, port, labels}]`, or llmd's `--endpoints-file` one).

The file is read at startup (a problem is a startup error, as in llm-d) and, with `watchFile`,
again whenever its modification time or size changes (checked every `pollIntervalS`); a
reload that fails keeps the last good set and is logged, as llm-d does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.cycle import DataKeys
from llmd.epp.datastore import EndpointSpec
from llmd.epp.discovery import load_endpoints_file
from llmd.errors import ConfigError

__all__ = ["FileDiscovery"]

log = logging.getLogger(__name__)


class FileDiscovery:
    type: ClassVar[str] = "file-discovery"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()

    class Params(LlmdModel):
        path: Path = Field(description="the endpoints file")
        watch_file: bool = Field(default=False, description="reload when the file changes")
        poll_interval_s: float = Field(default=1.0, gt=0, description="llmd: how often "
                                       "watchFile looks at the file")

    def __init__(self, name: str, params: Params) -> None:
        self.name, self.params = name, params

    def load(self) -> Sequence[EndpointSpec]:
        return load_endpoints_file(self.params.path)

    async def updates(self, stop: asyncio.Event) -> AsyncIterator[Sequence[EndpointSpec]]:
        seen = self._stamp()
        yield self.load()
        if not self.params.watch_file:
            await stop.wait()
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.params.poll_interval_s)
            stamp = self._stamp()
            if stop.is_set() or stamp == seen:
                continue
            seen = stamp
            try:
                specs = self.load()
            except ConfigError as exc:
                log.error("%s: keeping the last endpoints: %s", self.name, exc)
                continue
            yield specs

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.params.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size
