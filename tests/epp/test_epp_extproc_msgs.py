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


def test_shared_answers_differ_wherever_the_decision_does() -> None:
    """Answers are built once per distinct decision: each part of it is in the cache key."""
    token = {"x-session-token": "dG9rZW4="}
    first = routed("request_body", "10.0.0.1:8000", {}, token)
    assert routed("request_body", "10.0.0.1:8000", {}, dict(token)) is first
    others = [routed("request_headers", "10.0.0.1:8000", {}, token),
              routed("request_body", "10.0.0.2:8000", {}, token),
              routed("request_body", "10.0.0.1:8000", {PREFILLER_HEADER: "10.0.0.9:8000"}, token),
              routed("request_body", "10.0.0.1:8000", {}, {"x-session-token": "b3RoZXI="}),
              routed("request_body", "10.0.0.1:8000")]
    assert all(o != first for o in others)
    metadata = others[3].dynamic_metadata.fields["llmd.response_headers"].struct_value
    assert metadata.fields["x-session-token"].string_value == "b3RoZXI="
    assert "llmd.response_headers" not in others[4].dynamic_metadata.fields
