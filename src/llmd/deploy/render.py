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
from pydantic import BaseModel

from llmd.deploy._containers import ContainerContext, service_name_warnings
from llmd.deploy._dra import role_claim
from llmd.deploy._kv_events import KvEvents, check_role, kv_events
from llmd.deploy._model import VOLUME, ModelSource, model_source
from llmd.deploy._plan import plan_roles
from llmd.deploy._problems import Problems, mentions, report, unknown_entries, validate
from llmd.deploy._sources import Sources, deep_merge, load_sources, render_tpl
from llmd.deploy._ssrf import ssrf_pool, ssrf_rbac
from llmd.deploy._stack import epp_name, routing_objects
from llmd.deploy._workloads import Names, pod_labels, role_objects
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
                 release: str = "llmd", namespace: str | None = None,
                 llmd_image: str | None = None) -> Rendered:
    """Render the merged `-f` files and `--set` expressions; a ConfigError lists every
    problem, each naming the file or `--set` argument that set the value. `llmd_image`
    replaces `LLMD_IMAGE` as the default image of the containers that run `llmd` (the
    routing sidecar and the EPP); an image the values set still wins."""
    return _render_sources(load_sources(files, sets), release, namespace, llmd_image)


def render_values(tree: dict[str, Any], *, release: str = "llmd", namespace: str | None = None,
                  source: str = "values", llmd_image: str | None = None) -> Rendered:
    """Render an already merged values tree; problems name `source`."""
    return _render_sources(Sources(tree, fallback=source), release, namespace, llmd_image)


def _render_sources(sources: Sources, release: str, namespace: str | None,
                    llmd_image: str | None) -> Rendered:
    tree = sources.tree
    if llmd_image is not None:
        tree = deep_merge({"routing": {"proxy": {"image": llmd_image},
                                       "epp": {"image": llmd_image}}}, tree)
    values, lines, removed = validate(_merge_chart_maps(tree))
    unknown = unknown_entries(Values, sources.tree)
    warnings: list[str] = []
    objects: list[dict[str, Any]] = []
    if values is not None:
        problems = Problems()
        objects = _render(values, release, namespace, warnings, problems)
        lines += [line for line in problems.lines if not mentions(line, removed)]
        warnings += problems.warnings
    if lines:
        raise ConfigError(report(lines, sources, unknown))
    return Rendered(objects, report([u.line for u in unknown] + warnings, sources, ()))


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


def _render(values: Values, release: str, namespace: str | None, warnings: list[str],
            problems: Problems) -> list[dict[str, Any]]:
    """The objects; every independent part is rendered even after another failed, so that
    `problems` holds all of them."""
    with problems.collect():
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

    source = None
    with problems.collect():
        source = model_source(values.model_artifacts,
                              tpl(values.model_artifacts.uri, "modelArtifacts.uri"))
    if source is None:  # reported; the containers are still checked
        source = ModelSource("hf", values.model_artifacts.name, {"name": VOLUME, "emptyDir": {}},
                             False, ())
    errors: list[str] = []
    plans = plan_roles(values, warnings, errors)
    problems.add(*errors)
    warnings += service_name_warnings(values, plans)
    if source.scheme == "oci":
        warnings.append("modelArtifacts.uri: oci:// models are served from the image volume "
                        f"at {values.model_artifacts.mount_path} (the chart cannot render this)")
    objects: list[dict[str, Any]] = []
    account = values.service_account_override or fullname
    if not values.service_account_override:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": names.meta(fullname)})
    ssrf = None
    with problems.collect():
        ssrf = ssrf_pool(values, fullname, any(p.name == "decode" for p in plans), warnings)
    if ssrf is not None:
        objects += ssrf_rbac(ssrf, names, account)
    kv: KvEvents | None = None
    with problems.collect():
        kv = kv_events(values, epp_name(fullname), warnings)
    for plan in plans:
        if kv is not None:
            errors, notes = check_role(kv, plan, pod_labels(plan, values.model_artifacts.labels))
            problems.add(*errors)
            warnings += notes
        claim = role_claim(values, plan, fullname)
        if claim is not None:
            objects.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                            "metadata": names.meta(claim.template_name),
                            "spec": claim.template})
        ctx = ContainerContext(values, plan, source, tpl, claim=claim, ssrf=ssrf,
                               kv_events=kv, problems=problems)
        with problems.collect():
            objects += role_objects(ctx, names, account)
    with problems.collect():
        objects += routing_objects(values, names, any(p.pd for p in plans), kv)
    for i, obj in enumerate(values.extra_objects):
        with problems.collect():
            objects.append(tpl(obj, f"extraObjects[{i}]"))
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
    """`path: unknown key, ignored` for every key the chart would silently ignore."""
    data = values.model_dump(by_alias=True, exclude_unset=True)
    return [u.line for u in unknown_entries(type(values), data)]


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
