"""The dependency direction of docs/architecture.md, checked on the source's imports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "llmd"

# Each package may import only from the packages listed (and from the top-level shared modules).
ALLOWED: dict[str, set[str]] = {
    "engines": set(),
    "kvcache": set(),
    "sim": {"engines", "kvcache"},
    "epp": {"engines", "kvcache"},
    "sidecar": {"engines"},
    "deploy": {"engines"},
    "gateway": {"epp", "sim", "sidecar", "engines", "kvcache"},
    "bench": {"gateway", "epp", "sim", "sidecar", "engines", "kvcache"},
    # the command line sits on top of everything and nothing imports it
    "cli": {"bench", "deploy", "gateway", "epp", "sim", "sidecar", "engines", "kvcache"},
}
SHARED_MODULES = {"errors", "config", "_http", "_kube", "_proc", "__init__"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmd."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("llmd."):
                    found.add(alias.name.split(".")[1])
    return found


def _packages() -> list[str]:
    return sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


@pytest.mark.parametrize("package", _packages())
def test_package_imports_only_lower_layers(package: str) -> None:
    assert package in ALLOWED, f"new package {package!r}: add it to ALLOWED and architecture.md"
    bad = []
    for path in (SRC / package).rglob("*.py"):
        for dep in _imports(path) - {package} - SHARED_MODULES:
            if dep not in ALLOWED[package]:
                bad.append(f"{path.relative_to(SRC)} imports llmd.{dep}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", _packages())
def test_public_names_are_a_sorted_all(package: str) -> None:
    module = importlib.import_module(f"llmd.{package}")
    names = getattr(module, "__all__", None)
    assert names is not None, f"llmd.{package} has no __all__"
    assert list(names) == sorted(names), f"llmd.{package}.__all__ is not sorted"
    for name in names:
        assert hasattr(module, name), f"llmd.{package}.__all__ names missing {name!r}"
