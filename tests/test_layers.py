"""The dependency direction of docs/architecture.md, checked on the source's imports.

Every import is resolved to the full module it names: `from llmd import gateway` is
`llmd.gateway`, `from ..epp import z` in `llmd/sidecar/x/y.py` is `llmd.epp.z` (or `llmd.epp`
when `z` is a name in it). Rules:

- a package imports only itself, the packages `ALLOWED` lists and the shared top-level modules;
- the shared top-level modules import no package (only each other);
- nobody imports another package's private modules (`llmd.<pkg>._x`): only its public API;
  that holds for the repo's scripts (`bench/*.py`, `tools/*.py`) too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "llmd"
SCRIPTS = sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "tools").glob("*.py")])

# Each package may import only from the packages listed (and from the top-level shared modules).
ALLOWED: dict[str, set[str]] = {
    "engines": set(),
    "kvcache": set(),
    "sim": {"engines", "kvcache"},
    "epp": {"engines", "kvcache"},
    "sidecar": {"engines"},
    "deploy": {"engines"},
    "gateway": {"epp", "sim", "sidecar", "engines", "kvcache"},
    "operator": {"deploy", "engines"},
    "bench": {"gateway", "epp", "sim", "sidecar", "engines", "kvcache"},
    # the command line sits on top of everything and nothing imports it
    "cli": {"bench", "operator", "deploy", "gateway", "epp", "sim", "sidecar", "engines",
            "kvcache"},
}
SHARED_MODULES = {"errors", "config", "_http", "_json", "_kube", "_proc", "__init__"}


def _packages() -> list[str]:
    return sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


def _is_module(dotted: str, src: Path = SRC) -> bool:
    """Whether `llmd.a.b` is a module or package under `src` (not a name inside one)."""
    path = src.joinpath(*dotted.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(("llmd", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def imports(source: str, module: str, is_package: bool = False,
            src: Path = SRC) -> set[str]:
    """The `llmd` modules `source` (the text of `module`) imports, fully resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "llmd"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + is_package]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "llmd":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _is_module(sub, src) else target)
    return found


def problems(package: str | None, module: str, found: set[str]) -> list[str]:
    """Broken rules (see the module docstring) of `module`, in `package` (None: a shared
    module or a script), importing `found`."""
    bad = []
    shared = package is None and module.startswith("llmd.")
    for dep in sorted(found):
        parts = dep.split(".")
        top = parts[1] if len(parts) > 1 else "__init__"
        if top in SHARED_MODULES:
            continue
        if shared:
            bad.append(f"{module} (a shared module) imports package {dep}")
        elif package is not None and top != package and top not in ALLOWED[package]:
            bad.append(f"{module} imports {dep}")
        if top != package and any(p.startswith("_") for p in parts[2:]):
            bad.append(f"{module} imports {dep}, private to llmd.{top} (use its public API)")
    return bad


def _source_problems(path: Path, package: str | None) -> list[str]:
    module = _module_name(path)
    return problems(package, module,
                    imports(path.read_text(), module, path.name == "__init__.py"))


@pytest.mark.parametrize("package", _packages())
def test_package_imports_only_lower_layers(package: str) -> None:
    assert package in ALLOWED, f"new package {package!r}: add it to ALLOWED and architecture.md"
    bad = [p for path in (SRC / package).rglob("*.py") for p in _source_problems(path, package)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(SHARED_MODULES))
def test_shared_modules_import_no_package(name: str) -> None:
    path = SRC / f"{name}.py"
    assert path.is_file(), f"shared module {name} is gone: update SHARED_MODULES"
    bad = _source_problems(path, None)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scripts_use_public_apis(path: Path) -> None:
    bad = problems(None, f"{path.parent.name}/{path.name}",
                   imports(path.read_text(), path.stem))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("package", "file", "source", "expected"), [
    pytest.param("sidecar", "sidecar/app.py", "from llmd import gateway",
                 "llmd.sidecar.app imports llmd.gateway", id="from-llmd-import-package"),
    pytest.param("sidecar", "sidecar/connectors/x.py", "from ...epp import z",
                 "llmd.sidecar.connectors.x imports llmd.epp", id="relative-three-dots"),
    pytest.param("sidecar", "sidecar/x.py", "from ..epp import headers",
                 "llmd.sidecar.x imports llmd.epp.headers", id="relative-to-another-package"),
    pytest.param("sidecar", "sidecar/__init__.py", "from ..gateway import LocalStack",
                 "llmd.sidecar imports llmd.gateway", id="relative-from-init"),
    pytest.param("gateway", "gateway/x.py", "from llmd.sidecar._sse import f",
                 "private to llmd.sidecar", id="private-module"),
    pytest.param("gateway", "gateway/x.py", "from llmd.sidecar import _sse",
                 "private to llmd.sidecar", id="private-module-by-name"),
    pytest.param("cli", "cli/x.py", "import llmd.epp.plugins._base",
                 "private to llmd.epp", id="private-subpackage-module"),
    pytest.param(None, "config.py", "from llmd.engines import get_adapter",
                 "llmd.config (a shared module) imports package llmd.engines",
                 id="shared-module-imports-package"),
    pytest.param(None, "_kube.py", "from . import sidecar",
                 "llmd._kube (a shared module) imports package llmd.sidecar",
                 id="shared-module-relative"),
])
def test_each_rule_catches_its_violation(tmp_path: Path, package: str | None, file: str,
                                         source: str, expected: str) -> None:
    """The rules on a fake tree, so a rule that silently stops matching fails here."""
    src = tmp_path / "llmd"
    for sub in ("sidecar/connectors", "gateway", "epp/plugins", "cli"):
        for level in range(len(sub.split("/"))):
            pkg = src.joinpath(*sub.split("/")[: level + 1])
            pkg.mkdir(parents=True, exist_ok=True)
            (pkg / "__init__.py").touch()
    for mod in ("epp/headers.py", "sidecar/_sse.py", "epp/plugins/_base.py", "config.py",
                "_kube.py", "__init__.py"):
        (src / mod).touch()
    path = src / file
    module = _module_name(path, src)
    found = imports(source, module, path.name == "__init__.py", src)
    assert any(expected in p for p in problems(package, module, found)), (found, expected)


def test_relative_imports_within_a_package_are_fine(tmp_path: Path) -> None:
    assert imports("from .hostport import HostPort\nfrom . import body", "llmd.sidecar.app") \
        == {"llmd.sidecar.hostport", "llmd.sidecar.body"}
    assert problems("sidecar", "llmd.sidecar.app",
                    {"llmd.sidecar._sse", "llmd.engines", "llmd._kube", "llmd"}) == []


@pytest.mark.parametrize("package", _packages())
def test_public_names_are_a_sorted_all(package: str) -> None:
    module = importlib.import_module(f"llmd.{package}")
    names = getattr(module, "__all__", None)
    assert names is not None, f"llmd.{package} has no __all__"
    assert list(names) == sorted(names), f"llmd.{package}.__all__ is not sorted"
    for name in names:
        assert hasattr(module, name), f"llmd.{package}.__all__ names missing {name!r}"
