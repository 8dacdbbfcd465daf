"""A P/D pair that can never work is an error: decode and prefill on different engines (however
each engine is chosen), or a sidecar connector that speaks another engine's protocol."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmd.deploy import render_files
from llmd.engines import ENGINES, get_adapter
from llmd.errors import ConfigError

from ._cases import EXAMPLES


def _other(engine: str) -> str:
    return next(e for e in ENGINES if e != engine)


def _container(engine: str, how: str) -> tuple[dict[str, Any], str, str]:
    """A container running `engine`, chosen `how`; the path suffix and what the error shows."""
    adapter = get_adapter(engine)
    if how == "modelCommand":
        return ({"image": "i", "modelCommand": adapter.serve_model_command}, "modelCommand",
                repr(adapter.serve_model_command))
    if how == "imageDefault+engine":
        return ({"image": "i", "modelCommand": "imageDefault", "engine": engine}, "engine",
                repr(engine))
    command = adapter.serve_command()
    return {"image": "i", "modelCommand": "custom", "command": command}, "command", "the command"


def _write(tmp_path: Path, decode: dict[str, Any], prefill: dict[str, Any]) -> Path:
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"decode": {"containers": [decode]},
                                    "prefill": {"replicas": 1, "containers": [prefill]}}))
    return path


HOWS = ["modelCommand", "imageDefault+engine", "custom"]


@pytest.mark.parametrize("prefill_how", HOWS)
@pytest.mark.parametrize("decode_how", HOWS)
def test_decode_and_prefill_on_different_engines(engine: str, decode_how: str,
                                                 prefill_how: str, tmp_path: Path) -> None:
    decode, d_key, d_shown = _container(engine, decode_how)
    prefill, p_key, p_shown = _container(_other(engine), prefill_how)
    path = _write(tmp_path, decode, prefill)
    with pytest.raises(ConfigError) as info:
        render_files([path])
    assert info.value.problems == [
        f"{path}: prefill.containers[0].{p_key}: {p_shown} runs {_other(engine)}, but "
        f"decode.containers[0].{d_key} {d_shown} runs {engine}: decode and prefill must run "
        "the same engine (prefill hands the KV cache to decode over the engine's own protocol)"]


def test_image_default_without_engine_is_the_default_engine(engine: str,
                                                            tmp_path: Path) -> None:
    decode, _, _ = _container(engine, "modelCommand")
    path = _write(tmp_path, decode, {"image": "i", "modelCommand": "imageDefault"})
    if engine == "vllm":
        render_files([path])
        return
    with pytest.raises(ConfigError, match=r"prefill.containers\[0\].modelCommand: "
                       r"'imageDefault' \(no engine: set\) runs vllm, but"):
        render_files([path])


def test_the_same_engine_in_any_spelling_renders(engine: str, tmp_path: Path) -> None:
    decode, _, _ = _container(engine, "custom")
    prefill, _, _ = _container(engine, "imageDefault+engine")
    render_files([_write(tmp_path, decode, prefill)])


def test_a_custom_command_of_no_known_engine_is_not_compared(engine: str,
                                                            tmp_path: Path) -> None:
    decode, _, _ = _container(engine, "modelCommand")
    prefill = {"image": "i", "modelCommand": "custom", "command": ["/bin/my-server"]}
    result = render_files([_write(tmp_path, decode, prefill)])
    assert any("no container runs a known engine" in w for w in result.warnings)


def test_no_pd_no_comparison(engine: str, tmp_path: Path) -> None:
    decode, _, _ = _container(engine, "modelCommand")
    prefill, _, _ = _container(_other(engine), "modelCommand")
    render_files([_write(tmp_path, decode, prefill)], ["prefill.replicas=0"])


def _pd(engine: str) -> Path:
    return EXAMPLES / f"values-{engine}-pd.yaml"


@pytest.mark.parametrize("where", ["connector", "extraArgs", "extraArgs-split"])
def test_a_connector_of_the_other_engine(engine: str, where: str) -> None:
    wrong = get_adapter(_other(engine)).sidecar_connector
    sets, path = {
        "connector": (f"routing.proxy.connector={wrong}", "routing.proxy.connector"),
        "extraArgs": (f"routing.proxy.extraArgs={{--kv-connector={wrong}}}",
                      "routing.proxy.extraArgs[0]"),
        "extraArgs-split": (f"routing.proxy.extraArgs={{--kv-connector,{wrong}}}",
                            "routing.proxy.extraArgs[1]"),
    }[where]
    with pytest.raises(ConfigError) as info:
        render_files([_pd(engine)], [sets])
    command = get_adapter(engine).serve_model_command
    # Both sides of the conflict are named: the --set argument, and the file's engine.
    assert info.value.problems == [
        f"--set {sets}, {_pd(engine)}: {path}: {wrong!r} speaks {_other(engine)}'s P/D "
        f"protocol, but decode runs {engine} (decode.containers[0].modelCommand {command!r}): use "
        f"{get_adapter(engine).sidecar_connector!r}, or set no connector (the decode engine's "
        "own is the default)"]


def test_the_engines_own_connector_is_fine(engine: str) -> None:
    own = get_adapter(engine).sidecar_connector
    proxy = _decode_proxy(render_files([_pd(engine)], [f"routing.proxy.connector={own}"]))
    assert f"--kv-connector={own}" in proxy["args"]


def test_a_connector_llmd_sidecar_does_not_have(engine: str) -> None:
    with pytest.raises(ConfigError, match=r"routing.proxy.connector: 'nixl' is not a connector "
                       r"of `llmd sidecar` \(one of nixlv2, sglang\) \(did you mean 'nixlv2'\?\)"):
        render_files([_pd(engine)], ["routing.proxy.connector=nixl"])


def test_the_go_sidecar_keeps_its_own_connectors(engine: str) -> None:
    """llm-d's Go sidecar has connectors llmd's has not; only another engine's is wrong."""
    go = "routing.proxy.image=ghcr.io/llm-d/llm-d-routing-sidecar:v0.4.0"
    proxy = _decode_proxy(render_files([_pd(engine)], [go, "routing.proxy.connector=lmcache"]))
    assert "--connector=lmcache" in proxy["args"]
    wrong = get_adapter(_other(engine)).sidecar_connector
    with pytest.raises(ConfigError, match="speaks"):
        render_files([_pd(engine)], [go, f"routing.proxy.connector={wrong}"])


def test_llmd_sidecar_connectors_are_the_adapters() -> None:
    from llmd.sidecar.config import ConnectorName

    assert set(typing.get_args(ConnectorName)) == {get_adapter(e).sidecar_connector
                                                    for e in ENGINES}


def _decode_proxy(result: Any) -> dict[str, Any]:
    decode = next(o for o in result.objects
                  if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-decode"))
    inits = decode["spec"]["template"]["spec"]["initContainers"]
    return typing.cast(dict[str, Any], next(c for c in inits if c["name"] == "routing-proxy"))
