"""mypy --strict rejects a plugin class where it is registered as a kind it does not fit
(llm-d's `var _ framework.Scorer = &X{}`); one mypy run, about 5 s. Skipped where mypy is not
installed (it is not in the `test` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SNIPPET = '''\
from typing import ClassVar

from llmd.epp.cycle import DataKeys
from llmd.epp.plugins import PLUGINS, NoParams
from llmd.epp.plugins.registry import PICKER, SCORER
from llmd.epp.plugins.scorer.queue import QueueScorer


class GoodScorer:
    type: ClassVar[str] = "good-scorer"
    produces: ClassVar[DataKeys] = ()
    consumes: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name = name

    def score(self, request: object, pool: object) -> dict[str, float]:
        return {}


class NoConsumes:
    type: ClassVar[str] = "no-consumes"
    produces: ClassVar[DataKeys] = ()
    Params = NoParams

    def __init__(self, name: str, params: NoParams) -> None:
        self.name = name

    def score(self, request: object, pool: object) -> dict[str, float]:
        return {}


class WrongScore(GoodScorer):
    def score(self, request: object, pool: object) -> list[str]:  # type: ignore[override]
        return []


PLUGINS.extend(SCORER.table(GoodScorer))
PLUGINS.extend(PICKER.table(QueueScorer))  # BAD: a scorer is not a picker
PLUGINS.extend(SCORER.table(NoConsumes))  # BAD: no `consumes` declaration
PLUGINS.extend(SCORER.table(WrongScore))  # BAD: score() returns the wrong type
'''


def test_mypy_rejects_a_class_registered_as_a_kind_it_does_not_fit(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    (tmp_path / "registration.py").write_text(SNIPPET)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini",
         "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", "registration.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=100, check=False)
    errors = [line for line in proc.stdout.splitlines() if ": error: " in line]
    bad = [i for i, line in enumerate(SNIPPET.splitlines(), 1) if "# BAD" in line]
    assert [int(e.split(":")[1]) for e in errors] == bad, proc.stdout
    assert "expected \"PluginClass[Picker]\"" in errors[0]
    assert all("[arg-type]" in e for e in errors)
