"""Seeded, saved request sequences: shared-prefix (inference-perf's), multi-turn chat, random.

Lengths are in tokens of the tokenizer passed in (`count_tokens`), so prompts are as long for
the engine as the parameters say. A workload is saved as JSON Lines and replayed identically
against every system.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from llmd.config import LlmdModel

__all__ = [
    "BenchRequest",
    "MultiTurnParams",
    "RandomParams",
    "SharedPrefixParams",
    "Workload",
    "load_workload",
    "multi_turn",
    "random_prompts",
    "save_workload",
    "shared_prefix",
]

CountTokens = Callable[[str], int]

# A fixed vocabulary keeps prompts readable and identical across Python versions.
_WORDS = (
    "time person year way day thing man world life hand part child eye woman place work week "
    "case point government company number group problem fact be have do say get make go know "
    "take see come think look want give use find tell ask seem feel try leave call good new "
    "first last long great little own other old right big high different small large next early "
    "young important few public bad same able cache token router prefill decode engine model "
    "server request block prefix latency queue batch stream gateway picker metric score"
).split()


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request of a workload: OpenAI chat messages, or a completions prompt."""

    id: int
    max_tokens: int
    prompt_tokens: int
    group: int | None = None
    session: int | None = None
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None

    def body(self, model: str, stream: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": self.max_tokens,
                                "ignore_eos": True, "stream": stream, "temperature": 0}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.messages is not None:
            body["messages"] = self.messages
        else:
            body["prompt"] = self.prompt
        return body

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.messages is not None else "/v1/completions"


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    params: dict[str, Any]
    requests: tuple[BenchRequest, ...]

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[BenchRequest]:
        return iter(self.requests)


class SharedPrefixParams(LlmdModel):
    """inference-perf's `shared_prefix` data: G groups × P prompts on one system prompt each."""

    num_groups: int = Field(10, gt=0)
    num_prompts_per_group: int = Field(10, gt=0)
    system_prompt_len: int = Field(100, gt=0)
    question_len: int = Field(50, gt=0)
    output_len: int = Field(50, gt=0)
    seed: int = 0
    api: Literal["chat", "completion"] = "completion"


class MultiTurnParams(LlmdModel):
    """Chat sessions whose every turn resends the whole history so far."""

    num_sessions: int = Field(8, gt=0)
    turns: int = Field(4, gt=0)
    system_prompt_len: int = Field(200, gt=0)
    user_len: int = Field(50, gt=0)
    output_len: int = Field(50, gt=0)
    seed: int = 0


class RandomParams(LlmdModel):
    num_prompts: int = Field(100, gt=0)
    input_len: int = Field(200, gt=0)
    output_len: int = Field(50, gt=0)
    seed: int = 0


def _text(rng: random.Random, tokens: int, count: CountTokens) -> str:
    """Random words until the tokenizer counts `tokens` (never more)."""
    words: list[str] = []
    # Grow in strides, then trim word by word: counting after every word would be quadratic.
    while True:
        words.extend(rng.choice(_WORDS) for _ in range(max(1, tokens // 4)))
        if count(" ".join(words)) >= tokens:
            break
    while len(words) > 1 and count(" ".join(words)) > tokens:
        words.pop()
    return " ".join(words)


def shared_prefix(params: SharedPrefixParams, count: CountTokens) -> Workload:
    rng = random.Random(params.seed)
    systems = [_text(rng, params.system_prompt_len, count) for _ in range(params.num_groups)]
    items = []
    for g, system in enumerate(systems):
        for _ in range(params.num_prompts_per_group):
            items.append((g, system, _text(rng, params.question_len, count)))
    rng.shuffle(items)  # as inference-perf does: groups interleave in arrival order
    requests = []
    for i, (g, system, question) in enumerate(items):
        if params.api == "chat":
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": question}]
            requests.append(BenchRequest(i, params.output_len, count(system) + count(question),
                                         group=g, messages=messages))
        else:
            prompt = f"{system} {question}"
            requests.append(BenchRequest(i, params.output_len, count(prompt), group=g,
                                         prompt=prompt))
    return Workload("shared_prefix", params.model_dump(), tuple(requests))


def multi_turn(params: MultiTurnParams, count: CountTokens) -> Workload:
    rng = random.Random(params.seed)
    sessions = []
    for s in range(params.num_sessions):
        history = [{"role": "system", "content": _text(rng, params.system_prompt_len, count)}]
        turns = []
        for _ in range(params.turns):
            history = [*history, {"role": "user", "content": _text(rng, params.user_len, count)}]
            turns.append(list(history))
            # The reply is fixed in advance so every system sees the identical next turn.
            reply = _text(rng, params.output_len, count)
            history = [*history, {"role": "assistant", "content": reply}]
        sessions.append((s, turns))
    requests: list[BenchRequest] = []
    # Round-robin over sessions: turn t of every session, then turn t + 1.
    for t in range(params.turns):
        for s, turns in sessions:
            msgs = turns[t]
            requests.append(BenchRequest(len(requests), params.output_len,
                                         sum(count(m["content"]) for m in msgs),
                                         session=s, messages=msgs))
    return Workload("multi_turn", params.model_dump(), tuple(requests))


def random_prompts(params: RandomParams, count: CountTokens) -> Workload:
    rng = random.Random(params.seed)
    requests = []
    for i in range(params.num_prompts):
        prompt = _text(rng, params.input_len, count)
        requests.append(BenchRequest(i, params.output_len, count(prompt), prompt=prompt))
    return Workload("random", params.model_dump(), tuple(requests))


def save_workload(workload: Workload, path: Path) -> None:
    with path.open("w") as f:
        f.write(json.dumps({"name": workload.name, "params": workload.params}) + "\n")
        for r in workload.requests:
            f.write(json.dumps(asdict(r)) + "\n")


def load_workload(path: Path) -> Workload:
    with path.open() as f:
        head = json.loads(f.readline())
        requests = tuple(BenchRequest(**json.loads(line)) for line in f if line.strip())
    return Workload(head["name"], head["params"], requests)
