"""Every problem of a values file at once, each line naming the file or `--set` argument that
set the value, with "did you mean" for a misspelt key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmd.deploy import render_files
from llmd.deploy._sources import load_sources
from llmd.engines import get_adapter
from llmd.errors import ConfigError

from ._cases import EXAMPLES


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _problems(files: list[Path], sets: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        render_files(files, sets)
    return info.value.problems


def test_a_misspelt_image_in_decode_and_prefill_gives_two_lines(engine: str,
                                                                 tmp_path: Path) -> None:
    command = get_adapter(engine).serve_model_command
    path = _write(tmp_path / "v.yaml", {
        "decode": {"containers": [{"name": "e", "imgae": "img", "modelCommand": command}]},
        "prefill": {"replicas": 1,
                    "containers": [{"name": "e", "imag": "img", "modelCommand": command}]}})
    assert _problems([path]) == [
        f"{path}: decode.containers[0].imgae: unknown key (did you mean 'image'?); "
        "image is required",
        f"{path}: prefill.containers[0].imag: unknown key (did you mean 'image'?); "
        "image is required",
    ]


def test_schema_and_plan_problems_come_together(tmp_path: Path) -> None:
    path = _write(tmp_path / "v.yaml", {
        "decode": {"replicas": True, "containers": [{"name": "e", "imgae": "img",
                                                    "modelCommand": "vllmServe"}]},
        "prefill": {"parallelism": {"workers": 2}},
        "routing": {"servicePort": 8200, "proxy": {"targetport": 8300}}})
    assert _problems([path]) == [
        f"{path}: decode.replicas: expected an integer, got true",
        f"{path}: routing.proxy.targetPort: 8200 is also routing.servicePort: the sidecar and "
        "the decode engine cannot share a port",
        f"{path}: prefill.parallelism.workers: 2 pods per group need `multinode: true`",
        f"{path}: decode.containers[0].imgae: unknown key (did you mean 'image'?); image is "
        "required",
        f"{path}: routing.proxy.targetport: unknown key, ignored (did you mean 'targetPort'?)",
    ]


def test_a_value_the_schema_rejected_raises_no_second_problem(tmp_path: Path) -> None:
    """`modelCommand: sglangserve` is rejected; the check that an unset modelCommand needs a
    `command` must not then complain about a default the user never chose."""
    path = _write(tmp_path / "v.yaml", {"decode": {"containers": [
        {"name": "e", "image": "i", "modelCommand": "sglangserve"}]}})
    assert _problems([path]) == [
        f"{path}: decode.containers[0].modelCommand: 'sglangserve' is not one of vllmServe, "
        "sglangServe, imageDefault, custom (did you mean 'sglangServe'?)"]


def test_a_leader_and_its_workers_fail_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "v.yaml", {"multinode": True, "decode": {
        "parallelism": {"tensor": 8, "workers": 2},
        "containers": [{"name": "e", "modelCommand": "sglangServe"}]}})
    assert _problems([path]) == [f"{path}: decode.containers[0].image: required"]


@pytest.mark.parametrize(("expr", "line"), [
    pytest.param("decode.replicas=true",
                 "--set decode.replicas=true: decode.replicas: expected an integer, got true",
                 id="type"),
    pytest.param("decode.containers[0].modelCommand=sglangserve",
                 "--set decode.containers[0].modelCommand=sglangserve: "
                 "decode.containers[0].modelCommand: 'sglangserve' is not one of vllmServe, "
                 "sglangServe, imageDefault, custom (did you mean 'sglangServe'?)", id="enum"),
    pytest.param("decode.parallelism.workers=2",
                 "--set decode.parallelism.workers=2: decode.parallelism.workers: 2 pods per "
                 "group need `multinode: true`", id="plan"),
    pytest.param("decode.containers[0].image=null",
                 "--set decode.containers[0].image=null: decode.containers[0].image: required",
                 id="inside-a-list-from-the-file"),
])
def test_a_problem_from_set_names_the_set_argument(engine: str, expr: str, line: str) -> None:
    assert _problems([EXAMPLES / f"values-{engine}.yaml"], (expr,)) == [line]


def test_each_file_is_blamed_for_its_own_values(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"decode": {"replicas": "2"}})
    b = _write(tmp_path / "b.yaml", {"prefill": {"replicas": True}})
    assert _problems([a, b]) == [
        f"{a}: decode.replicas: expected an integer, got '2' (a string)",
        f"{b}: prefill.replicas: expected an integer, got true",
    ]
    # a later file that sets the value again takes the blame
    c = _write(tmp_path / "c.yaml", {"decode": {"replicas": 1.5}})
    assert _problems([a, c])[0] == f"{c}: decode.replicas: expected an integer, got 1.5"


def test_every_unreadable_source_at_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed")
    missing = tmp_path / "missing.yaml"
    problems = _problems([broken, missing], ("novalue",))
    assert [p.split(":")[0] for p in problems] == [str(broken), str(missing), "--set novalue"]


def test_blame_falls_back_to_who_set_the_neighbours(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.yaml", {"routing": {"httpRoute": {"enabled": True}},
                                     "decode": {"containers": [{"name": "e"}]}})
    sources = load_sources([a], ["decode.containers[0].image=x"])
    assert sources.blame(("decode", "containers", 0, "image")) == \
        "--set decode.containers[0].image=x"
    assert sources.blame(("decode", "containers", 0, "name")) == str(a)  # the file's list
    assert sources.blame(("routing", "httpRoute", "parentRefs")) == str(a)  # unset: neighbours
    assert sources.blame(("routing", "proxy", "targetPort"), [("decode", "containers", 0,
                                                              "image")]) == \
        "--set decode.containers[0].image=x"  # unset itself: who set the paths it names


def test_cli_names_the_set_argument(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from llmd.cli import main; main()", "render",
         "-f", str(EXAMPLES / "values-vllm.yaml"), "--set", "decode.replicas=true"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: --set decode.replicas=true: decode.replicas: expected an "
                           "integer, got true\n")
