"""Parameters that name where prefix-match data comes from, shared by the plugins that take them.

- `prefixPluginName`/`prefixPluginType` (llm-d's `no-hit-lru-scorer` and `pd-profile-handler`):
  in llm-d they name the prefix plugin whose state is read, which was the prefix scorer before
  producers were split out; llmd accepts a producer of `PREFIX_MATCH` or a scorer that reads it.
  llm-d's default for both is `prefix-cache-scorer`; llmd's is unset: the config's producer.
- `prefixMatchInfoProducerName` (llm-d's name on `prefix-cache-affinity-filter`; llmd takes it
  on `prefix-cache-scorer` and `prefix-based-pd-decider`): a producer of `PREFIX_MATCH`.

The loader checks every reference given (`llmd.epp._config_data`). llmd runs one producer per
key, so a reference does not choose between producers: it states which one the config means,
and a wrong one is a load-time error rather than a scorer silently reading other data.
"""

from __future__ import annotations

from pydantic import Field

from llmd.config import LlmdModel
from llmd.epp.plugins.base import ProducerRef
from llmd.epp.plugins.keys import PREFIX_MATCH

__all__ = ["PrefixPluginParams", "PrefixProducerParams"]


class PrefixPluginParams(LlmdModel):
    prefix_plugin_type: str = Field(
        default="", description="type of the plugin prefix-match data comes from "
        "(a producer, or a prefix scorer); unset: the config's producer")
    prefix_plugin_name: str = Field(
        default="", description="name of that plugin; unset: the config's producer")

    def producer_refs(self) -> list[ProducerRef]:
        if not (self.prefix_plugin_name or self.prefix_plugin_type):
            return []
        return [ProducerRef(PREFIX_MATCH, self.prefix_plugin_name, self.prefix_plugin_type,
                            "prefixPluginName", "prefixPluginType", readers_too=True)]


class PrefixProducerParams(LlmdModel):
    prefix_match_info_producer_name: str = Field(
        default="", description="the plugin that produces prefix-match; unset: the config's")

    def producer_refs(self) -> list[ProducerRef]:
        if not self.prefix_match_info_producer_name:
            return []
        return [ProducerRef(PREFIX_MATCH, self.prefix_match_info_producer_name,
                            name_param="prefixMatchInfoProducerName")]
