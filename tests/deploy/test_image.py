"""The image the rendered objects run: the repository's Dockerfile, its tag and its entry point.

Every container that runs llmd itself (the routing sidecar, the EPP) must run the image `make
image` builds, tagged with the package version, and call a command of that image's `llmd`
(ENTRYPOINT) with flags that command accepts. No image is built here (no docker or podman
daemon): the Dockerfile is read as text.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import llmd
from llmd.cli import app
from llmd.deploy import LLMD_IMAGE, LLMD_IMAGE_REPOSITORY, crd, dump_yaml, render_inputs
from llmd.operator import install_manifests

from ._cases import EXAMPLES, NAMESPACE, REPO

DOCKERFILE = REPO / "Dockerfile"
VALUES_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("values-*.yaml"))
# what `llmd render` takes: values files and LLMInferenceServices (the operator's objects), plus
# the operator's own installation
INPUTS = [*VALUES_EXAMPLES, *sorted(p.name for p in EXAMPLES.glob("llmisvc-*.yaml")),
          "operator-manifests"]

Instruction = tuple[str, str]


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """The Dockerfile's stages (instructions before the first FROM: stage 0), each a list of
    (INSTRUCTION, rest) with comments dropped and continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw.strip())
        pending = ""
    stages: list[list[Instruction]] = [[]]
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def _only(stage: list[Instruction], word: str) -> str:
    found = [rest for w, rest in stage if w == word]
    assert len(found) == 1, f"the final stage has {len(found)} {word} instructions, wants 1"
    return found[0]


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def _final_stage() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())[-1]


def entrypoint() -> list[str]:
    return _exec_form(_only(_final_stage(), "ENTRYPOINT"))


def llmd_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every container and init container of every pod template that runs llmd's image or
    the `llmd` command."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                for c in node.get(key) or []:
                    if isinstance(c, dict) and (
                            c.get("image", "").startswith(LLMD_IMAGE_REPOSITORY + ":")
                            or (c.get("command") or [""])[0] == "llmd"):
                        found.append(c)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(objects)
    return found


def _render(name: str, sets: tuple[str, ...] = (), **kw: Any) -> list[dict[str, Any]]:
    if name == "operator-manifests":
        return install_manifests(crd())
    return render_inputs([EXAMPLES / name], sets, release="demo", namespace=NAMESPACE,
                         **kw).objects


def test_the_version_is_written_once_and_tags_the_image() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml writes the version again"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "llmd.__version__"}
    assert LLMD_IMAGE == f"ghcr.io/llmd/llmd:{llmd.__version__}"


@pytest.mark.parametrize("example", INPUTS)
def test_rendered_llmd_containers_call_the_image_cli(example: str) -> None:
    """Each llmd container runs the versioned image and `ENTRYPOINT <command> <args>` that the
    image's `llmd` parses: a real command, every flag known, every value of the right type."""
    ep = entrypoint()
    root = typer.main.get_command(app)  # a click Group (typer's vendored click)
    commands = root.commands  # type: ignore[attr-defined]
    containers = llmd_containers(_render(example))
    expected = {"operator"} if example == "operator-manifests" else {"epp"}
    assert {c["command"][len(ep)] for c in containers} >= expected, \
        f"{example}: no {expected} container found"
    for c in containers:
        assert c["image"] == LLMD_IMAGE, f"{example}: {c['name']} runs {c['image']}"
        command = c["command"]
        assert command[: len(ep)] == ep, \
            f"{example}: {c['name']} runs {command}, the image's ENTRYPOINT is {ep}"
        name, args = command[len(ep)], [*command[len(ep) + 1:], *c.get("args", [])]
        sub = commands.get(name)
        assert sub is not None, f"{example}: {c['name']}: `llmd {name}` is not a command " \
            f"(commands: {sorted(commands)})"
        parent = root.make_context("llmd", [name])
        try:
            sub.make_context(name, list(args), parent=parent)
        except Exception as exc:  # click's UsageError, from typer's vendored click
            pytest.fail(f"{example}: {c['name']}: `llmd {name}` rejects {args}: {exc}")


def test_the_image_exposes_the_rendered_ports() -> None:
    exposed = {int(p.split("/")[0]) for w, rest in _final_stage() if w == "EXPOSE"
               for p in rest.split()}
    for example in INPUTS:
        for c in llmd_containers(_render(example)):
            ports = {p["containerPort"] for p in c.get("ports", [])}
            assert ports <= exposed, f"{example}: {c['name']} listens on {ports - exposed}, " \
                f"not EXPOSEd in the Dockerfile"


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    user = _only(_final_stage(), "USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: runAsNonRoot can verify only a numeric user"
    assert int(uid) != 0


def test_the_image_installs_the_package_and_its_declared_dependencies() -> None:
    """The build installs llmd's own wheel (its dependencies come from its metadata), the
    final stage carries that environment, and its bin, where `[project.scripts]` puts the
    ENTRYPOINT, comes first on PATH; no dependency list is copied into the Dockerfile."""
    stages = parse_dockerfile(DOCKERFILE.read_text())
    runs = " && ".join(rest for stage in stages for w, rest in stage if w == "RUN")
    assert re.search(r"pip wheel .*--no-deps .*\s\.(\s|$)", runs), runs
    venv = re.search(r"(\S+)/bin/pip install /wheels/llmd-\*\.whl", runs)
    assert venv, runs
    final = stages[-1]
    assert ("COPY", f"--from=build {venv[1]} {venv[1]}") in final
    env = " ".join(rest for w, rest in final if w == "ENV")
    assert re.search(rf"\bPATH={re.escape(venv[1])}/bin:", env), env
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert entrypoint()[0] in project["scripts"]
    instructions = " ".join(rest for stage in stages for _, rest in stage).lower()
    for dep in project["dependencies"]:
        name = re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0].lower()
        assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", instructions), \
            f"the Dockerfile names the dependency {name}: install the package instead"


def test_dockerignore_lets_the_build_context_through() -> None:
    """.dockerignore is an allowlist: every path the build stage COPYs is let in again."""
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().split()
               if line.startswith("!")}
    copied = [p.rstrip("/") for stage in parse_dockerfile(DOCKERFILE.read_text())
              for w, rest in stage if w == "COPY" and not rest.startswith("--from")
              for p in rest.split()[:-1]]
    assert copied
    for path in copied:
        assert (REPO / path).exists(), path
        assert path in allowed, f".dockerignore keeps {path} out of the build context"


def test_llmd_image_overrides_the_default_but_not_the_values() -> None:
    objects = _render("values-vllm-pd.yaml", llmd_image="registry.local/llmd:dev")
    assert {c["image"] for c in llmd_containers(objects)} == {"registry.local/llmd:dev"}
    objects = _render("values-vllm-pd.yaml", ("routing.epp.image=mine/epp:1",),
                      llmd_image="registry.local/llmd:dev")
    images = {c["name"]: c["image"] for c in llmd_containers(objects)}
    assert images == {"routing-proxy": "registry.local/llmd:dev", "epp": "mine/epp:1"}


def test_render_cli_llmd_image() -> None:
    result = CliRunner().invoke(app, ["render", "-f", str(EXAMPLES / "values-sglang-pd.yaml"),
                                      "--llmd-image", "registry.local/llmd:dev"])
    assert result.exit_code == 0, result.output
    assert "image: registry.local/llmd:dev" in result.output
    assert LLMD_IMAGE not in result.output
    assert dump_yaml(_render("values-sglang-pd.yaml")).count(f"image: {LLMD_IMAGE}") == 2


MAKE = shutil.which("make")


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_image_tags_the_rendered_image() -> None:
    assert MAKE is not None
    dry = subprocess.run([MAKE, "-n", "image", "CONTAINER_TOOL=podman"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert f"podman build --tag {LLMD_IMAGE} .\n" in dry.stdout
    missing = subprocess.run([MAKE, "image", "CONTAINER_TOOL="], cwd=REPO,
                             capture_output=True, text=True)
    assert missing.returncode != 0
    assert "neither docker nor podman is installed" in missing.stderr

