"""The per-request cycle state: typed keys, typed get/put, `require`'s error; `PrefixMatch`."""

from __future__ import annotations

import pytest

from llmd.epp import CycleState, DataKey, InferenceRequest, MissingDataError
from llmd.epp.plugins import PREFIX_MATCH, BlockGrid, PrefixMatch

COUNT = DataKey("count", int)


def test_put_get_and_require() -> None:
    state = CycleState()
    assert state.get(COUNT) is None and COUNT not in state and len(state) == 0
    state.put(COUNT, 3)
    assert state.get(COUNT) == 3 and state.require(COUNT, "reader") == 3
    assert COUNT in state and len(state) == 1
    assert repr(state) == "CycleState(count)"


def test_put_checks_the_keys_type() -> None:
    with pytest.raises(TypeError, match="count holds int, not str"):
        CycleState().put(COUNT, "3")  # type: ignore[arg-type]


def test_require_names_the_reader_and_the_key() -> None:
    with pytest.raises(MissingDataError) as err:
        CycleState().require(PREFIX_MATCH, "prefix-cache-scorer")
    assert str(err.value) == ("prefix-cache-scorer reads prefix-match, but no plugin put it for "
                              "this request (its producer did not run or skipped it)")


def test_keys_compare_by_identity() -> None:
    state = CycleState()
    state.put(COUNT, 1)
    assert state.get(DataKey("count", int)) is None


def test_each_request_has_its_own_state_and_equality_ignores_it() -> None:
    a, b = InferenceRequest("r"), InferenceRequest("r")
    a.state.put(COUNT, 1)
    assert b.state.get(COUNT) is None and a == b


def test_prefix_match_per_endpoint_grid() -> None:
    match = PrefixMatch(block_tokens=16, total_blocks=4, matched={"a": 2, "b": 0, "c": 3},
                        grids={"c": BlockGrid(8, 8)})
    assert (match.ratio("a"), match.cached_tokens("a"), match.matched_blocks("a")) == (0.5, 32, 2)
    assert (match.ratio("c"), match.cached_tokens("c")) == (3 / 8, 24)
    assert (match.ratio("z"), match.cached_tokens("z"), match.grid("z")) == (0.0, 0, (16, 4))
    assert match.any_hit
    assert not PrefixMatch(16, 0, {"a": 0}).any_hit and PrefixMatch(16, 0, {}).ratio("a") == 0.0
