"""Shared fixtures: the engine parametrization every engine-facing test uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.engines import ENGINES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Every test that takes `engine` runs once per dialect, so a gap is a failing case."""
    return str(request.param)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}: tests need the shared fixtures beside the repo")
    return SHARED
