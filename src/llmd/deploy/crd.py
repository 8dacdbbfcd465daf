"""The `LLMInferenceService` CustomResourceDefinition, generated from the pydantic models.

pydantic's JSON Schema becomes a Kubernetes *structural* schema: `$ref`s inlined, every node
typed, `null` alternatives dropped (an unset field is an absent key), quantities as
`x-kubernetes-int-or-string`, free-form Kubernetes structures as
`x-kubernetes-preserve-unknown-fields`, each model's `cel_rules` as `x-kubernetes-validations`,
the models' docstrings as descriptions (`kubectl explain`). Defaults stay out of the schema:
the API server would apply them before the CEL rules, which llmd evaluates on the object as
written; the descriptions say what an unset field means.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmd.deploy._cel import nested_models
from llmd.deploy.llmisvc import (
    GROUP,
    KIND,
    PLURAL,
    ROOT_RULES,
    SHORT_NAMES,
    VERSION,
    LLMInferenceServiceSpec,
    ServiceStatus,
)

__all__ = ["crd", "structural_schema"]

Json = dict[str, Any]
_KEEP = ("description", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
         "minItems", "maxItems", "x-kubernetes-preserve-unknown-fields")
# pydantic writes the bounds of a validator-wrapped type (`Int`) under its own names.
_BOUNDS = {"ge": "minimum", "le": "maximum"}


def crd() -> Json:
    """The CustomResourceDefinition (`apiextensions.k8s.io/v1`), with the status subresource
    and `kubectl get` columns."""
    spec = structural_schema(LLMInferenceServiceSpec)
    spec["description"] = ("What to serve and how: the model, the engine (vLLM or SGLang), "
                           "replicas, P/D, multinode and the router.")
    status = structural_schema(ServiceStatus)
    root: Json = {
        "type": "object",
        "required": ["spec"],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                       "metadata": {"type": "object"}, "spec": spec, "status": status},
        "x-kubernetes-validations": [rule.schema() for rule in ROOT_RULES],
    }
    ready = '.status.conditions[?(@.type=="Ready")]'
    columns = [
        {"name": "Engine", "type": "string", "jsonPath": ".spec.inferenceServer.type"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Prefill", "type": "integer", "jsonPath": ".spec.prefill.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason", "priority": 1},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "llmd"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": KIND.lower(), "shortNames": list(SHORT_NAMES),
                      "categories": ["llmd"]},
            "versions": [{"name": VERSION, "served": True, "storage": True,
                          "subresources": {"status": {}},
                          "additionalPrinterColumns": columns,
                          "schema": {"openAPIV3Schema": root}}],
        },
    }


def structural_schema(model: type[BaseModel]) -> Json:
    """`model`'s validation schema (by alias) as a Kubernetes structural schema, with the CEL
    rules of it and every model nested in it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    rules = _rules_by_title(model)
    return _node(raw, defs, rules)


def _rules_by_title(model: type[BaseModel], out: dict[str, list[Json]] | None = None
                    ) -> dict[str, list[Json]]:
    """Each model's rules, keyed by the title pydantic gives its schema (the class name)."""
    out = {} if out is None else out
    if model.__name__ in out:
        return out
    out[model.__name__] = [rule.schema() for rule in getattr(model, "cel_rules", ())]
    for field in model.model_fields.values():
        for sub, _ in nested_models(field.annotation):
            _rules_by_title(sub, out)
    return out


def _node(node: Json, defs: Json, rules: dict[str, list[Json]]) -> Json:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        resolved = _node(target, defs, rules)
        if "description" in node:
            resolved["description"] = node["description"]
        return resolved
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node[key] if o.get("type") != "null"]
            types = sorted(o.get("type", "") for o in options)
            if types in (["integer", "number", "string"], ["integer", "string"]):
                out: Json = {"x-kubernetes-int-or-string": True}
            elif len(options) == 1:
                out = _node(options[0], defs, rules)
            else:
                raise ValueError(f"no structural schema for {key} {node[key]}")
            if "description" in node:
                out["description"] = node["description"]
            return out
    out = {k: v for k, v in node.items() if k in _KEEP}
    out.update({_BOUNDS[k]: v for k, v in node.items() if k in _BOUNDS})
    if "gt" in node or "lt" in node or "exclusiveMinimum" in node:
        raise ValueError(f"use ge/le bounds (OpenAPI v3.0 has no exclusive numbers): {node}")
    if "const" in node:
        out["enum"] = [node["const"]]
    kind = node.get("type") or ("string" if "enum" in out else None)
    if kind is None:
        raise ValueError(f"no type in schema node {node}")
    out["type"] = kind
    if kind == "object":
        properties = node.get("properties")
        if properties:
            out["properties"] = {k: _node(v, defs, rules) for k, v in properties.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        elif isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _node(node["additionalProperties"], defs, rules)
        elif not out.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
        if title_rules := rules.get(node.get("title", "")):
            if properties:
                out["x-kubernetes-validations"] = title_rules
    elif kind == "array":
        out["items"] = _node(node.get("items", {"type": "object"}), defs, rules)
    return out
