"""The EndpointPickerConfig `llmd render` puts in the EPP's ConfigMap loads in `llmd epp`."""

from __future__ import annotations

import yaml

from llmd.deploy import default_epp_config, render_files
from llmd.epp.config import load_config

from ._cases import EXAMPLES


def test_aggregated_config_loads() -> None:
    config = load_config(text=yaml.safe_dump(default_epp_config(pd=False)))
    assert "queue-scorer" in config.describe()


def test_pd_config_loads() -> None:
    config = load_config(text=yaml.safe_dump(default_epp_config(pd=True)))
    assert config.scheduler.handler.type == "disagg-profile-handler"
    assert set(config.scheduler.profiles) == {"decode", "prefill"}
    assert config.plugins["prefix-based-pd-decider"].params.non_cached_tokens == 16


def test_pd_configmap_loads() -> None:
    objects = render_files([EXAMPLES / "values-vllm-pd.yaml"], release="r").objects
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    (text,) = config_map["data"].values()
    assert load_config(text=text).scheduler.handler.type == "disagg-profile-handler"


def test_configmap_holds_the_config_the_deployment_reads() -> None:
    objects = render_files([EXAMPLES / "values-sglang.yaml"], release="r").objects
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    deployment = next(o for o in objects if o["kind"] == "Deployment"
                      and o["metadata"]["name"] == "r-llm-d-modelservice-epp")
    (name, text), = config_map["data"].items()
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--config-file=/config/{name}" in args
    assert yaml.safe_load(text) == default_epp_config(pd=False)


def test_precise_configs_load_with_and_without_pd() -> None:
    for pd in (False, True):
        config = load_config(text=yaml.safe_dump(default_epp_config(pd=pd, precise=True)))
        assert "precise-prefix-cache-scorer" in config.describe()
        if pd:
            assert set(config.scheduler.profiles) == {"decode", "prefill"}
