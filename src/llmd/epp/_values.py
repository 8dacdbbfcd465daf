"""The EndpointPickerConfig inside an llm-d router chart's Helm values file.

llm-d's router charts take the config as text: `router.epp.pluginsCustomConfig` maps file
names to configs and `router.epp.pluginsConfigFile` names the one the EPP loads (the GIE-era
charts wrote the same two keys under `inferenceExtension`). Values files are layered, so a file
may set only `pluginsCustomConfig` (one entry: that one is meant) or only `pluginsConfigFile`
(the chart's built-in `default-plugins.yaml` is llm-d's default config, llmd's too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmd.errors import ConfigError

__all__ = ["config_from_values"]

_SECTIONS = (("router", "epp"), ("inferenceExtension",))
_BUILT_IN_DEFAULT = "default-plugins.yaml"


def config_from_values(path: Path, default_config: str) -> tuple[str, str]:
    """(config text, where it was found, for messages); ConfigError naming what is missing."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    for keys in _SECTIONS:
        section = _dig(raw, keys)
        if isinstance(section, dict) and ("pluginsCustomConfig" in section
                                          or "pluginsConfigFile" in section):
            return _pick(path, ".".join(keys), section, default_config)
    wanted = " or ".join(".".join((*k, "pluginsCustomConfig")) for k in _SECTIONS)
    raise ConfigError(f"{path}: no EndpointPickerConfig found: expected {wanted} (a values "
                      "file of llm-d's router chart)")


def _pick(path: Path, at: str, section: dict[str, Any], default_config: str
          ) -> tuple[str, str]:
    custom = section.get("pluginsCustomConfig") or {}
    if not isinstance(custom, dict) or not all(isinstance(v, str) for v in custom.values()):
        raise ConfigError(f"{path}: {at}.pluginsCustomConfig: expected file name → config text")
    name = section.get("pluginsConfigFile")
    if name is None:
        if len(custom) != 1:
            raise ConfigError(f"{path}: {at}.pluginsConfigFile: not set, and "
                              f"pluginsCustomConfig holds {len(custom)} configs "
                              f"({', '.join(custom) or 'none'}): name the one to load")
        name = next(iter(custom))
    if name in custom:
        return custom[name], f"{path}: {at}.pluginsCustomConfig[{name}]"
    if name == _BUILT_IN_DEFAULT:
        return default_config, f"{path}: {at}.pluginsConfigFile ({name}, the chart's default)"
    raise ConfigError(f"{path}: {at}.pluginsConfigFile: {name!r} is not in pluginsCustomConfig "
                      f"({', '.join(custom) or 'none'}) and is not the chart's "
                      f"{_BUILT_IN_DEFAULT}; give it in pluginsCustomConfig or use --config-file")


def _dig(raw: object, keys: tuple[str, ...]) -> object:
    for key in keys:
        if not isinstance(raw, dict):
            return None
        raw = raw.get(key)
    return raw
