"""Each adapter's P/D descriptor agrees with its sidecar connector and its metric dialect."""

from __future__ import annotations

from llmd.engines import get_adapter


def test_pd_descriptor_matches_the_connector_and_metric_names(engine: str) -> None:
    adapter = get_adapter(engine)
    pd = adapter.pd
    # Serial NIXL v2 carries kv_transfer_params; SGLang's concurrent legs carry a room.
    expected = {"nixlv2": "kv-transfer-params", "sglang": "bootstrap-room"}
    assert pd.handoff == expected[adapter.sidecar_connector]
    assert pd.request_fields
    prefix = adapter.metric_names.waiting.split(":")[0] + ":"
    for name in (pd.prefill_queue, pd.transfer_queue, adapter.metric_names.pd_transfer_misses):
        assert name is None or name.startswith(prefix)
