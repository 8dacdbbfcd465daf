"""Shared fixtures: the engine parametrization every engine-facing test uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmd.engines import ENGINES

# grpcio >= 1.81 (grpc/grpc#43055): with fork support on, a child started while an in-process
# gRPC server runs (Envoy beside the in-process EPP) can abort between fork and exec on an
# epoll EBADF ("envoy exited with code -6"). No test forks into gRPC, so it is off, before grpc
# is first imported. `llmd up` is not affected: its EPP is a child process.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every test that takes `engine` runs once per dialect, so a gap is a failing case."""
    return str(request.param)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}: "
                    "tests need the shared fixtures beside the repo")
    return SHARED
