"""Deploy vLLM and SGLang on Kubernetes from llm-d-modelservice values: `llmd render`.

`render_files()` turns chart values files (v0.4.12, v0.3.8-era accepted) plus llmd's own sections
into the whole stack: workloads, routing sidecar, InferencePool, EPP and HTTPRoute. All engine
argv comes from `llmd.engines` adapters. The containers that run `llmd` itself (the routing
sidecar, the EPP) default to `LLMD_IMAGE`, the repository's `Dockerfile` tagged with the package
version.
"""

from __future__ import annotations

from llmd.deploy._llmisvc_plan import plan_service, render_inputs, service_values
from llmd.deploy._sources import deep_merge, load_values_sources
from llmd.deploy._stack import default_epp_config
from llmd.deploy.convert import Converted, convert_files, convert_kserve, convert_values
from llmd.deploy.crd import crd
from llmd.deploy.render import (
    Rendered,
    dump_yaml,
    render_files,
    render_values,
    unknown_keys,
    write_output_dir,
)
from llmd.deploy.values import LLMD_IMAGE, LLMD_IMAGE_REPOSITORY, ModelCommand, Values

__all__ = [
    "Converted",
    "LLMD_IMAGE",
    "LLMD_IMAGE_REPOSITORY",
    "ModelCommand",
    "Rendered",
    "Values",
    "convert_files",
    "convert_kserve",
    "convert_values",
    "crd",
    "deep_merge",
    "default_epp_config",
    "dump_yaml",
    "load_values_sources",
    "plan_service",
    "render_files",
    "render_inputs",
    "render_values",
    "service_values",
    "unknown_keys",
    "write_output_dir",
]
