"""The decision as an ext_proc header mutation: routing headers set, or removed when not set."""

from __future__ import annotations

import pytest

from llmd.epp import DESTINATION_HEADER, PREFILLER_HEADER
from llmd.epp._extproc_msgs import routed


@pytest.mark.parametrize("phase", [pytest.param("request_headers", id="headers-phase"),
                                   pytest.param("request_body", id="body-phase")])
@pytest.mark.parametrize(("headers", "expected_set", "expected_removed"), [
    pytest.param({PREFILLER_HEADER: "[fd00::7]:8000"},
                 {DESTINATION_HEADER: "10.0.0.1:8000", PREFILLER_HEADER: "[fd00::7]:8000"}, [],
                 id="disaggregated-sets-prefiller"),
    pytest.param({}, {DESTINATION_HEADER: "10.0.0.1:8000"}, [PREFILLER_HEADER],
                 id="decode-only-removes-client-prefiller"),
])
def test_routed_sets_or_removes_routing_headers(
    phase: str, headers: dict[str, str], expected_set: dict[str, str],
    expected_removed: list[str],
) -> None:
    answer = routed(phase, "10.0.0.1:8000", headers)
    mutation = getattr(answer, phase).response.header_mutation
    assert {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers} \
        == expected_set
    assert list(mutation.remove_headers) == expected_removed
