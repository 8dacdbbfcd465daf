"""Model artifacts by URI scheme: the engine's model argument, the volume, its mount, HF env."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from llmd.deploy.values import ModelArtifacts
from llmd.engines import LoraSpec
from llmd.errors import ConfigError

__all__ = ["ModelSource", "lora_spec", "model_source"]

SCHEMES = ("hf", "pvc", "pvc+hf", "oci")
VOLUME = "model-storage"


@dataclass(frozen=True, slots=True)
class ModelSource:
    scheme: str
    model_arg: str
    volume: dict[str, Any]
    read_only_mount: bool
    env: tuple[dict[str, Any], ...]
    """Env for containers that mount the model volume (HF_HOME / HF_HUB_CACHE)."""


def model_source(artifacts: ModelArtifacts, uri: str) -> ModelSource:
    """`uri` is `modelArtifacts.uri` after template rendering."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"modelArtifacts.uri: {uri!r} is not one of hf://MODEL, pvc://CLAIM/PATH, "
            "pvc+hf://CLAIM/CACHE_DIRS/NAMESPACE/MODEL, oci://IMAGE")
    rest = _unquote(rest)
    mount = artifacts.mount_path
    if scheme == "hf":
        size = artifacts.size if artifacts.size not in ("", None) else "0"
        return ModelSource(scheme, rest, {"name": VOLUME, "emptyDir": {"sizeLimit": size}},
                           False, ({"name": "HF_HOME", "value": mount},))
    if scheme == "oci":
        # The chart fails here; an image volume holds the model files at the mount path.
        volume = {"name": VOLUME, "image": {"reference": rest, "pullPolicy": "IfNotPresent"}}
        return ModelSource(scheme, mount, volume, True, ())
    parts = rest.split("/")
    claim = parts[0]
    volume = {"name": VOLUME, "persistentVolumeClaim": {
        "claimName": claim, "readOnly": artifacts.read_only}}
    if scheme == "pvc":
        if len(parts) < 2 or not parts[1]:
            raise ConfigError(f"modelArtifacts.uri: {uri!r} needs a path after the claim "
                              "(pvc://CLAIM/PATH)")
        return ModelSource(scheme, f"{mount}/{'/'.join(parts[1:])}", volume,
                           artifacts.read_only, ())
    if len(parts) < 3:
        raise ConfigError(f"modelArtifacts.uri: {uri!r} needs pvc+hf://CLAIM/CACHE_DIRS/"
                          "NAMESPACE/MODEL")
    # As the chart does, the cache directory is under /model-cache whatever the mount path.
    cache = "/".join(parts[1:-2])
    env = ({"name": "HF_HUB_CACHE", "value": f"/model-cache/{cache}"},)
    return ModelSource(scheme, f"{parts[-2]}/{parts[-1]}", volume, artifacts.read_only, env)


def lora_spec(artifacts: ModelArtifacts) -> LoraSpec | None:
    """The adapters as the engines load them: `hf://ORG/REPO` → the repo id (both engines
    fetch it from the Hub), an absolute path as is (a volume the pod mounts)."""
    lora = artifacts.lora
    if lora is None:
        return None
    adapters, seen = [], set()
    problems = [] if lora.adapters else ["modelArtifacts.lora.adapters: give at least one"]
    for i, adapter in enumerate(lora.adapters):
        where = f"modelArtifacts.lora.adapters[{i}]"
        if adapter.name in seen or not adapter.name or "=" in adapter.name:
            problems.append(f"{where}.name: {adapter.name!r} must be unique, non-empty and "
                            "without '='")
        seen.add(adapter.name)
        scheme, sep, rest = adapter.uri.partition("://")
        if sep and scheme == "hf" and rest:
            adapters.append((adapter.name, rest))
        elif not sep and adapter.uri.startswith("/"):
            adapters.append((adapter.name, adapter.uri))
        else:
            problems.append(f"{where}.uri: {adapter.uri!r} is not hf://ORG/REPO or an absolute "
                            "path in the pod (mount the volume that holds it)")
    if problems:
        raise ConfigError(problems)
    return LoraSpec(tuple(adapters), lora.max_rank, lora.max_adapters)


def _unquote(text: str) -> str:
    # The chart's examples write `hf://"{{ ... }}"`; its YAML output drops the quotes.
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        value = yaml.safe_load(text)
        return str(value)
    return text
