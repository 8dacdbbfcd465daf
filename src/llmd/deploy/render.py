"""`llmd render`: values files → the Kubernetes objects of the whole stack.

`render_files(files, sets, release=..., namespace=...)` merges the sources like Helm, validates
them into `Values`, plans each role (parallelism, ports, engines, P/D) and renders, in order:
the ServiceAccount, decode and prefill workloads (with PodMonitors), the InferencePool, the EPP
and the HTTPRoute, then `extraObjects`. Every problem raises one `ConfigError` that lists them
all; keys the chart would silently ignore come back as warnings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmd.config import config_error, did_you_mean, format_loc
from llmd.deploy._containers import ContainerContext
from llmd.deploy._dra import role_claim
from llmd.deploy._model import model_source
from llmd.deploy._plan import plan_roles
from llmd.deploy._sources import deep_merge, load_values_sources, render_tpl
from llmd.deploy._types import TYPE_ERROR
from llmd.deploy._ssrf import ssrf_pool, ssrf_rbac
from llmd.deploy._stack import routing_objects
from llmd.deploy._workloads import Names, role_objects
from llmd.deploy.values import Values, chart_map_defaults
from llmd.errors import ConfigError

__all__ = ["Rendered", "dump_yaml", "render_files", "render_values", "unknown_keys",
           "write_output_dir"]

CHART = "llm-d-modelservice"
LEGACY_SERVING_LABEL = "llm-d.ai/inferenceServing"  # renamed llm-d.ai/inference-serving in v0.4.5
MANAGED_BY = {"app.kubernetes.io/managed-by": "llmd", "app.kubernetes.io/part-of": "llmd"}


@dataclass
class Rendered:
    objects: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


def render_files(files: Sequence[Path | str], sets: Sequence[str] = (), *,
                 release: str = "llmd", namespace: str | None = None) -> Rendered:
    tree = load_values_sources(files, sets)
    source = ", ".join(str(f) for f in files) or "values"
    return render_values(tree, release=release, namespace=namespace, source=source)


def render_values(tree: dict[str, Any], *, release: str = "llmd", namespace: str | None = None,
                  source: str = "values") -> Rendered:
    tree = _merge_chart_maps(tree)
    try:
        values = Values.model_validate(tree)
    except ValidationError as exc:
        raise _values_error(exc, source) from None
    warnings = [f"{source}: {w}" for w in unknown_keys(values)]
    try:
        objects = _render(values, release, namespace, warnings)
    except ConfigError as exc:
        raise ConfigError([f"{source}: {p}" for p in exc.problems]) from None
    return Rendered(objects, warnings)


def _merge_chart_maps(tree: dict[str, Any]) -> dict[str, Any]:
    """Helm merges a values file's maps into the chart's defaults: `modelArtifacts.labels:
    {llm-d.ai/model: x}` keeps `llm-d.ai/inference-serving: "true"`; a `null` removes a key."""
    defaults = chart_map_defaults()
    artifacts = tree.get("modelArtifacts")
    labels = artifacts.get("labels") if isinstance(artifacts, dict) else None
    if isinstance(labels, dict) and LEGACY_SERVING_LABEL in labels:
        # A v0.3-era file: its pods were selected by the old name only; keep it that way so a
        # Deployment's (immutable) selector does not change.
        defaults["modelArtifacts"]["labels"] = {}
    merged = deep_merge(defaults, tree)
    for path in (("modelArtifacts", "labels"), ("accelerator", "resources"),
                 ("accelerator", "env"), ("accelerator", "resourceClaimTemplates")):
        node: Any = merged
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(path[-1]), dict):
            node[path[-1]] = {k: v for k, v in node[path[-1]].items() if v is not None}
    return merged


def _values_error(exc: ValidationError, source: str) -> ConfigError:
    """`config_error`, with enum choices listed plainly: `'x' is not one of a, b, c`."""
    problems = []
    for err, line in zip(exc.errors(include_url=False), config_error(exc, source).problems,
                         strict=True):
        if err["type"] == TYPE_ERROR:
            line = f"{source}: {format_loc(_user_loc(err['loc']))}: {err['msg']}"
        elif err["type"] == "literal_error":
            expected = str((err.get("ctx") or {}).get("expected", ""))
            allowed = [a.strip().strip("'") for a in expected.replace(" or ", ", ").split(",")]
            value = err.get("input")
            hint = did_you_mean(str(value), allowed)
            line = (f"{source}: {format_loc(_user_loc(err['loc']))}: {value!r} is not one of "
                    f"{', '.join(allowed)}{hint}")
        problems.append(line)
    return ConfigError(problems)


def _user_loc(loc: Sequence[Any]) -> list[int | str]:
    return [p for p in loc if isinstance(p, int) or ("[" not in p and "-" not in p[:1])]


def _render(values: Values, release: str, namespace: str | None,
            warnings: list[str]) -> list[dict[str, Any]]:
    _unsupported(values)
    if not values.enabled:
        return []
    fullname = _fullname(values, release)
    names = Names(fullname, namespace, dict(MANAGED_BY))
    aliased = values.model_dump(by_alias=True)
    release_vars = {"Name": release, "Namespace": namespace or "default"}

    def tpl(obj: Any, where: str) -> Any:
        if isinstance(obj, str):
            return render_tpl(obj, aliased, release_vars, where)
        if isinstance(obj, list):
            return [tpl(x, f"{where}[{i}]") for i, x in enumerate(obj)]
        if isinstance(obj, dict):
            return {k: tpl(v, f"{where}.{k}") for k, v in obj.items()}
        return obj

    uri = tpl(values.model_artifacts.uri, "modelArtifacts.uri")
    source = model_source(values.model_artifacts, uri)
    plans = plan_roles(values, warnings)
    if source.scheme == "oci":
        warnings.append("modelArtifacts.uri: oci:// models are served from the image volume "
                        f"at {values.model_artifacts.mount_path} (the chart cannot render this)")
    objects: list[dict[str, Any]] = []
    account = values.service_account_override or fullname
    if not values.service_account_override:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": names.meta(fullname)})
    ssrf = ssrf_pool(values, fullname, any(p.name == "decode" for p in plans))
    if ssrf is not None:
        objects += ssrf_rbac(ssrf, names, account)
    for plan in plans:
        claim = role_claim(values, plan, fullname)
        if claim is not None:
            objects.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                            "metadata": names.meta(claim.template_name),
                            "spec": claim.template})
        ctx = ContainerContext(values, plan, source, tpl, claim=claim, ssrf=ssrf)
        objects += role_objects(ctx, names, account)
    pd = any(p.pd for p in plans)
    objects += routing_objects(values, names, pd)
    objects += [tpl(o, f"extraObjects[{i}]") for i, o in enumerate(values.extra_objects)]
    return objects


def _unsupported(values: Values) -> None:
    problems = []
    if values.requester.enable:
        problems.append("requester.enable: the fast-model-actuation requester is not rendered "
                        "by llmd (use the chart for it)")
    if values.dra and values.dra.enabled:
        problems.append("dra.enabled: v0.3.8's top-level `dra` block was replaced in chart "
                        "v0.4.0; set accelerator.dra: true and "
                        "accelerator.resourceClaimTemplates instead")
    if problems:
        raise ConfigError(problems)


def _fullname(values: Values, release: str) -> str:
    if values.fullname_override:
        return values.fullname_override[:55].rstrip("-")
    name = values.name_override or CHART
    full = release if name in release else f"{release}-{name}"
    return full[:55].rstrip("-")


def unknown_keys(values: BaseModel) -> list[str]:
    """`path: unknown key` for every key the chart would silently ignore."""
    out: list[str] = []
    _walk(values, (), out)
    return out


def _walk(model: BaseModel, loc: tuple[int | str, ...], out: list[str]) -> None:
    known = [f.alias or name for name, f in type(model).model_fields.items()]
    for key in model.model_extra or {}:
        out.append(f"{format_loc([*loc, key])}: unknown key, ignored{did_you_mean(key, known)}")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = info.alias or name
        if isinstance(value, BaseModel):
            _walk(value, (*loc, key), out)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    _walk(item, (*loc, key, i), out)


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """No `&id001` anchors: objects share dicts (a pod's volumes); spell every one out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(obj: Any) -> str:
    return str(yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=100))


def dump_yaml(objects: Sequence[dict[str, Any]]) -> str:
    """A multi-document YAML stream, `---` before each object."""
    return "".join("---\n" + _dump(o) for o in objects)


def write_output_dir(objects: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """One file per object, `NN-kind-name.yaml`, like `helm template --output-dir`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(objects):
        name = obj.get("metadata", {}).get("name", "object")
        path = directory / f"{i:02d}-{str(obj.get('kind', 'object')).lower()}-{name}.yaml"
        path.write_text(_dump(obj))
        paths.append(path)
    return paths
