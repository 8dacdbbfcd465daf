"""`llmd up` with an EPP config that names its endpoints (`dataLayer.discovery.endpoints`).

llm-d v1 lets the picker config say where the pool is (`file-discovery` and its endpoints
file). `llmd up --epp-config-file` with such a config fronts those servers exactly as
`--endpoint` flags would (`_external`: identified, waited for, sidecars with `--pd`): each
endpoint becomes one server flag (its `llm-d.ai/engine-type` and `llm-d.ai/role` labels as
`engine=`/`role=`, its other labels as EPP labels), and the EPP gets the config without the
discovery section plus the identified endpoints as flags (one source of endpoints per EPP). The
file is read once, at start: `watchFile` reloads are `llmd epp`'s, not `llmd up`'s (a config
that asks for them is warned about).
"""

from __future__ import annotations

import logging
from typing import Any

import yaml

from llmd.engines import ENGINE_TYPE_LABEL, ROLE_LABEL
from llmd.epp.config import load_config
from llmd.epp.plugins import FileDiscovery
from llmd.errors import ConfigError

__all__ = ["discovered_servers"]

log = logging.getLogger(__name__)


def discovered_servers(config_text: str, source: str) -> tuple[tuple[str, ...], str] | None:
    """(server flags, the config without `dataLayer.discovery.endpoints`) when the config
    declares endpoint discovery, else None; `source` names the config in errors."""
    doc = yaml.safe_load(config_text)
    discovery = ((doc.get("dataLayer") or {}).get("discovery") or {}) \
        if isinstance(doc, dict) else {}
    if not isinstance(discovery, dict) or not (discovery.get("endpoints")
                                               or discovery.get("pluginRef")):
        return None
    config = load_config(text=config_text)
    if config.discovery is None:
        return None
    endpoints = config.discovery.load()
    if isinstance(config.discovery, FileDiscovery) and config.discovery.params.watch_file:
        log.warning("%s: watchFile is not followed under llmd up: the endpoints file is read "
                    "once, at start (restart llmd up after editing it; llmd epp itself "
                    "reloads it)", source)
    if not endpoints:
        raise ConfigError(f"{source}: dataLayer.discovery.endpoints lists no endpoint")
    flags = []
    for ep in endpoints:
        host = f"[{ep.address}]" if ":" in ep.address else ep.address
        parts = [f"http://{host}:{ep.port}"]
        labels = dict(ep.labels)
        if engine := labels.pop(ENGINE_TYPE_LABEL, None):
            parts.append(f"engine={engine}")
        if role := labels.pop(ROLE_LABEL, None):
            parts.append(f"role={role}")
        parts += [f"{k}={v}" for k, v in labels.items() if "," not in f"{k}{v}"]
        flags.append(",".join(parts))
    return tuple(flags), _without_discovery(doc)


def _without_discovery(doc: dict[str, Any]) -> str:
    """`doc` without the endpoint discovery section and the plugin it names."""
    section = doc["dataLayer"]["discovery"]
    ref = (section.get("endpoints") or {}).get("pluginRef") or section.get("pluginRef")
    plugins = [p for p in doc.get("plugins") or []
               if not (isinstance(p, dict) and (p.get("name") or p.get("type")) == ref)]
    doc = {**doc, "plugins": plugins}
    data_layer = dict(doc["dataLayer"])
    discovery = {k: v for k, v in data_layer["discovery"].items()
                 if k not in ("endpoints", "pluginRef")}
    if discovery:
        data_layer["discovery"] = discovery
    else:
        data_layer.pop("discovery")
    out = {**doc, "dataLayer": data_layer} if data_layer else \
        {k: v for k, v in doc.items() if k != "dataLayer"}
    return str(yaml.safe_dump(out, sort_keys=False))

