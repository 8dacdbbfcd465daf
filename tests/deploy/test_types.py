"""Integer and boolean values are as strict as the chart's values.schema.json: `replicas: true`
is an error naming the path and what is expected, never a 1."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from llmd.deploy import Values, render_files
from llmd.deploy._types import TYPE_ERROR
from llmd.errors import ConfigError

from ._cases import COMPAT


def _base(annotation: Any) -> Any:
    """`Annotated[int, ...] | None` → int; a model class or list of one → that class."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is list:
        item = _base(typing.get_args(annotation)[0])
        return [item] if isinstance(item, type) and issubclass(item, BaseModel) else list
    return annotation


def _scalar_fields(model: type[BaseModel], loc: tuple[Any, ...] = ()) -> list[tuple[Any, type]]:
    """(values path, int or bool) for every integer and boolean field of the schema."""
    out: list[tuple[Any, type]] = []
    for name, info in model.model_fields.items():
        key, base = info.alias or name, _base(info.annotation)
        if base in (int, bool):
            out.append(((*loc, key), base))
        elif isinstance(base, type) and issubclass(base, BaseModel):
            out += _scalar_fields(base, (*loc, key))
        elif isinstance(base, list) and base is not list:
            out += _scalar_fields(base[0], (*loc, key, 0))
    return out


def _tree(loc: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A values tree that sets only `loc` (list items are one-element lists)."""
    node: Any = value
    for key in reversed(loc):
        node = [node] if isinstance(key, int) else {key: node}
    return typing.cast(dict[str, Any], node)


def _errors(tree: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        Values.model_validate(tree)
    except ValidationError as exc:
        return list(exc.errors(include_url=False))
    return []


FIELDS = _scalar_fields(Values)
INTS = [loc for loc, kind in FIELDS if kind is int]
BOOLS = [loc for loc, kind in FIELDS if kind is bool]


def test_the_schema_walk_finds_the_fields_that_matter() -> None:
    assert ("decode", "replicas") in INTS and ("prefill", "replicas") in INTS
    assert ("decode", "parallelism", "tensor") in INTS
    assert ("routing", "inferencePool", "targetPorts") not in INTS  # a list, checked below
    assert ("multinode",) in BOOLS and ("decode", "containers", 0, "mountModelVolume") in BOOLS
    assert len(INTS) >= 12 and len(BOOLS) >= 25


@pytest.mark.parametrize("loc", INTS, ids=[".".join(map(str, loc)) for loc in INTS])
@pytest.mark.parametrize("bad", [True, False, "2", 1.5], ids=["true", "false", "string", "1.5"])
def test_every_integer_field_rejects_booleans_strings_and_fractions(loc: Any, bad: Any) -> None:
    errors = _errors(_tree(loc, bad))
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, TYPE_ERROR)], errors
    assert errors[0]["msg"].startswith("expected an integer, got ")


@pytest.mark.parametrize("loc", BOOLS, ids=[".".join(map(str, loc)) for loc in BOOLS])
@pytest.mark.parametrize("bad", ["true", "no", 1, 0], ids=["'true'", "'no'", "1", "0"])
def test_every_boolean_field_rejects_strings_and_numbers(loc: Any, bad: Any) -> None:
    errors = _errors(_tree(loc, bad))
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, TYPE_ERROR)], errors
    assert errors[0]["msg"].startswith("expected true or false, got ")


@pytest.mark.parametrize(("tree", "loc"), [
    pytest.param({"routing": {"inferencePool": {"targetPorts": [8000, True]}}},
                 ("routing", "inferencePool", "targetPorts", 1), id="target-port-list"),
    pytest.param({"decode": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": True}}}]}},
                 ("decode", "containers", 0, "resources", "limits", "nvidia.com/gpu"),
                 id="resource-limit"),
    pytest.param({"modelArtifacts": {"size": False}}, ("modelArtifacts", "size"), id="size"),
    pytest.param({"routing": {"proxy": {"zapLogLevel": True}}},
                 ("routing", "proxy", "zapLogLevel"), id="zap-log-level"),
])
def test_other_numbers_reject_booleans(tree: dict[str, Any], loc: Any) -> None:
    assert [(e["loc"], e["type"]) for e in _errors(tree)] == [(loc, TYPE_ERROR)]


def test_whole_floats_are_integers_as_in_json_schema() -> None:
    values = Values.model_validate({"decode": {"replicas": 2.0}})
    assert values.decode.replicas == 2 and type(values.decode.replicas) is int


def test_the_error_names_file_path_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"decode": {"replicas": True},
                                    "prefill": {"parallelism": {"tensor": "2"}}}))
    with pytest.raises(ConfigError) as info:
        render_files([path])
    assert info.value.problems == [
        f"{path}: decode.replicas: expected an integer, got true",
        f"{path}: prefill.parallelism.tensor: expected an integer, got '2' (a string)",
    ]


@pytest.mark.parametrize("name", ["values-cpu.yaml", "values-pd.yaml", "values.default.yaml"])
def test_the_charts_own_values_still_load(name: str) -> None:
    values = Values.model_validate(yaml.safe_load((COMPAT / name).read_text()))
    assert values.decode.replicas >= 0
