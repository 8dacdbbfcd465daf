"""Workloads are seeded and exact-length; summaries compute what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmd.bench import (
    MultiTurnParams,
    RandomParams,
    RequestResult,
    SharedPrefixParams,
    load_workload,
    markdown_table,
    multi_turn,
    percentile,
    random_prompts,
    save_workload,
    shared_prefix,
    summarize,
)


def words(text: str) -> int:
    return len(text.split())


def test_shared_prefix_is_seeded_grouped_and_exact_length(tmp_path: Path) -> None:
    params = SharedPrefixParams(num_groups=4, num_prompts_per_group=3, system_prompt_len=64,
                                question_len=8, output_len=5, seed=7)
    a, b = shared_prefix(params, words), shared_prefix(params, words)
    assert a == b
    assert len(a) == 12
    assert all(r.prompt_tokens == 72 and r.max_tokens == 5 for r in a)
    by_group: dict[int, set[str]] = {}
    for r in a:
        assert r.prompt is not None
        by_group.setdefault(r.group or 0, set()).add(" ".join(r.prompt.split()[:64]))
    assert len(by_group) == 4 and all(len(prefixes) == 1 for prefixes in by_group.values())
    assert shared_prefix(params.model_copy(update={"seed": 8}), words) != a
    save_workload(a, tmp_path / "w.jsonl")
    assert load_workload(tmp_path / "w.jsonl") == a


def test_multi_turn_resends_growing_history() -> None:
    w = multi_turn(MultiTurnParams(num_sessions=2, turns=3, output_len=4), words)
    first, later = w.requests[0], w.requests[4]
    assert first.session == later.session == 0
    assert first.messages is not None and later.messages is not None
    assert later.messages[: len(first.messages)] == first.messages
    assert later.prompt_tokens > first.prompt_tokens


def test_random_prompts_differ() -> None:
    w = random_prompts(RandomParams(num_prompts=5, input_len=20), words)
    assert len({r.prompt for r in w}) == 5


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (50, 2.5), (100, 4.0)])
def test_percentile(q: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == expected


def test_summary_and_table() -> None:
    results = [
        RequestResult(0, 0.0, 0.1, 0.01, 1.0, 100, 10, 50),
        RequestResult(1, 0.5, 0.3, 0.02, 1.5, 100, 10, 0),
        RequestResult(2, 0.5, None, None, 0.1, 100, 0, 0, error="HTTP 503"),
    ]
    s = summarize("llmd", "rate=1", 1.0, results)
    assert (s.requests, s.errors) == (3, 1)
    assert s.duration_s == pytest.approx(2.0)
    assert s.output_tokens_per_s == pytest.approx(10.0)
    assert s.cache_hit_share == pytest.approx(0.25)
    table = markdown_table([s])
    assert "| llmd | rate=1 | 1.00 | 10 | 25.0% |" in table
