"""EndpointPickerConfig: load the YAML, build the plugins, wire the scheduler.

Same file format as llm-d (`apiVersion: llm-d.ai/v1alpha1`, `kind: EndpointPickerConfig`,
`plugins`, `schedulingProfiles`, `saturationDetector`, `dataLayer`, `parser`, `flowControl`),
plus llmd's
`objectives`. Like llm-d, the loader fills in `single-profile-handler`, `max-score-picker`, the
default producer of each data key a plugin consumes and no declared plugin produces, the
`utilization-detector`, `metrics-data-source` → `core-metrics-extractor` and `openai-parser`
when the file leaves them out. Plugins' roles come from the registry's per-kind tables
(`llmd.epp.plugins.registry`). The work is split: `_config_plugins` (plugins[] → instances and
their kinds), `_config_data` (data keys: producers, defaults, `prefixPluginName`-style
references), `_config_build` (handler, profiles, detector, scheduler), `_config_datalayer`
(`dataLayer`, `parser`) and `_config_flow` (`flowControl` and its feature gate). Every problem
is reported at once, each line naming the file, the path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmd.config import config_error
from llmd.epp._config_build import EndpointPickerConfig, build
from llmd.epp._config_models import (
    API_VERSION,
    DEPRECATED_API_VERSIONS,
    EndpointPickerConfigFile,
    ObjectivesFile,
)
from llmd.epp._config_v1 import deprecation_notes
from llmd.epp._values import config_from_values
from llmd.epp.plugins import PLUGINS, PluginRegistry
from llmd.epp.plugins.registry import KINDS
from llmd.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG", "EndpointPickerConfig", "load_config", "load_objectives", "plugin_catalog",
    "v1_default_config",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
"""
"""llm-d's default (`pkg/epp/config/loader/defaults.go`), used when no file is given."""


def v1_default_config(peak_prefill_throughput: float | Mapping[str, Any] | None = None) -> str:
    """llm-d v1.0's recommended scheduling ("sticky until saturated", its optimized-baseline
    guide): `approx-prefix-cache-producer` + `inflight-load-producer` +
    `prefix-cache-affinity-filter` + `token-load-scorer`, and the `max-score-picker` the
    loader adds. `peak_prefill_throughput` (a number, or per engine / endpoint as
    `llmd calibrate` prints it) goes on the filter, the scorer and the producer alike; None
    keeps the plugin default (15,928 tok/s) and unweighted token load."""
    plugins: list[dict[str, Any]] = [
        {"type": "approx-prefix-cache-producer"},
        {"type": "inflight-load-producer"},
        {"type": "prefix-cache-affinity-filter"},
        {"type": "token-load-scorer"},
    ]
    if peak_prefill_throughput is not None:
        for p in plugins[1:]:  # a copy each: no YAML anchors in what users read
            p["parameters"] = {"peakPrefillThroughput": copy.deepcopy(
                dict(peak_prefill_throughput) if isinstance(peak_prefill_throughput, Mapping)
                else peak_prefill_throughput)}
    doc = {"apiVersion": API_VERSION, "kind": "EndpointPickerConfig", "plugins": plugins,
           "schedulingProfiles": [{"name": "default", "plugins": [
               {"pluginRef": "prefix-cache-affinity-filter"}, {"pluginRef": "token-load-scorer"}]}]}
    return str(yaml.safe_dump(doc, sort_keys=False))


def load_config(
    path: Path | None = None,
    *,
    text: str | None = None,
    registry: PluginRegistry = PLUGINS,
    values: Path | None = None,
) -> EndpointPickerConfig:
    """Load `path` (or `text`, or the config inside the Helm values file `values`, or llm-d's
    default when none is given); ConfigError on problems."""
    if values is not None:
        text, source = config_from_values(values, DEFAULT_CONFIG)
    elif path is not None:
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    elif text is not None:
        source = "<config text>"
    else:
        source, text = "<default config>", DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    try:
        spec = EndpointPickerConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source) from exc
    if spec.api_version in DEPRECATED_API_VERSIONS:
        changes = [f"apiVersion: {API_VERSION}", *deprecation_notes(spec)]
        log.warning("%s: apiVersion %s is deprecated; for %s change: %s", source,
                    spec.api_version, API_VERSION, "; ".join(changes))
    return build(spec, source, registry)


def plugin_catalog(registry: PluginRegistry = PLUGINS) -> list[str]:
    """One line per plugin type, for `llmd epp --list-plugins`: the type, its kinds (main one
    first), its parameters with their defaults, and the data keys it produces and consumes."""
    rows = []
    for name in sorted(registry):
        fields = registry.params_of(name).model_fields
        params = ", ".join(f"{f.alias or n}={_shown(f.get_default(call_default_factory=True))!r}"
                           for n, f in fields.items())
        kinds = ",".join(k.name.replace(" ", "-") for k in KINDS
                         if k in registry.kinds_of(name))
        cls = registry[name]
        data = "".join(f"  {what}: {', '.join(k.name for k in keys)}"
                       for what, keys in (("produces", cls.produces), ("consumes", cls.consumes))
                       if keys)
        rows.append((name, kinds, f"{params or '(no parameters)'}{data}"))
    width = max((len(kinds) for _, kinds, _ in rows), default=0)
    return [f"{name:30} {kinds:{width}}  {rest}" for name, kinds, rest in rows]


def load_objectives(path: Path) -> dict[str, int]:
    """`objectives: [{name, priority}]` from a YAML file → {name: priority}."""
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = ObjectivesFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read objectives: {exc}") from exc
    except ValidationError as exc:
        raise config_error(exc, str(path)) from exc
    return {o.name: o.priority for o in parsed.objectives}




def _shown(default: object) -> object:
    return default.model_dump(by_alias=True) if isinstance(default, BaseModel) else default
