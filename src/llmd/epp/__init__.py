"""The endpoint picker (EPP): Envoy asks it over ext_proc which endpoint serves each request.

`serve(EppSettings(...), stop)` runs it; `load_config()` loads an EndpointPickerConfig;
`PLUGINS` is the registry of plugin types.
"""

from __future__ import annotations

from llmd.epp.config import DEFAULT_CONFIG, EndpointPickerConfig, load_config
from llmd.epp.cycle import CycleState, DataKey, MissingDataError
from llmd.epp.datastore import Datastore, Endpoint, EndpointId, EndpointSpec, PoolSnapshot
from llmd.epp.director import Decision, Director
from llmd.epp.discovery import (
    Discovery,
    StaticDiscovery,
    load_endpoints_file,
    parse_endpoint_flag,
)
from llmd.epp.headers import (
    DESTINATION_HEADER,
    LB_METADATA_NAMESPACE,
    PREFILLER_HEADER,
    RESPONSE_HEADERS,
    RESPONSE_METADATA_NAMESPACE,
    ROUTING_HEADERS,
    SESSION_HEADER,
)
from llmd.epp.plugins import PLUGINS, PluginRegistry
from llmd.epp.request import InferenceRequest
from llmd.epp.scheduling import Scheduler, SchedulerProfile
from llmd.epp.scraper import Scraper, ScrapeSettings
from llmd.epp.server import EppSettings, Listening, serve

__all__ = [
    "CycleState",
    "DEFAULT_CONFIG",
    "DESTINATION_HEADER",
    "DataKey",
    "Datastore",
    "Decision",
    "Director",
    "Discovery",
    "Endpoint",
    "EndpointId",
    "EndpointPickerConfig",
    "EndpointSpec",
    "EppSettings",
    "InferenceRequest",
    "LB_METADATA_NAMESPACE",
    "Listening",
    "MissingDataError",
    "PLUGINS",
    "PREFILLER_HEADER",
    "PluginRegistry",
    "PoolSnapshot",
    "RESPONSE_HEADERS",
    "RESPONSE_METADATA_NAMESPACE",
    "ROUTING_HEADERS",
    "SESSION_HEADER",
    "Scheduler",
    "SchedulerProfile",
    "ScrapeSettings",
    "Scraper",
    "StaticDiscovery",
    "load_config",
    "load_endpoints_file",
    "parse_endpoint_flag",
    "serve",
]
