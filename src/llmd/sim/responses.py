"""Response bodies and SSE chunks in each API's shape (OpenAI completions/chat, SGLang native).

A `Format` turns running `Sequence`s (one per prompt of a request) and their `TokenEvent`s
into the bytes the client reads, so the handler's loop is the same for every API. Choice
`index` is `prompt_index * n + choice`, as vLLM numbers a batch; usage sums the prompts.
With `logprobs` asked, every token gets a chunk (even one whose text is still held back for a
stop string), carrying that token's logprobs, as vLLM streams them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence as Seq
from typing import Any, Protocol

from llmd.sim._logprobs import TokenLogprob, chat_logprobs, completion_logprobs
from llmd.sim.engine import Sequence, TokenEvent

__all__ = ["ChatFormat", "CompletionFormat", "Format", "GenerateFormat", "sse", "usage"]

DONE = b"data: [DONE]\n\n"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode() + b"\n\n"


def usage(seqs: Seq[Sequence]) -> dict[str, Any]:
    """OpenAI usage summed over the request's prompts."""
    prompt = sum(s.prompt_tokens for s in seqs)
    done = sum(s.completion_tokens for s in seqs)
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + done,
        "completion_tokens": done,
        "prompt_tokens_details": {"cached_tokens": sum(s.cached_tokens for s in seqs)},
    }


class Format(Protocol):
    def head(self, seqs: Seq[Sequence]) -> bytes:
        """Bytes sent before the first token's chunk (may be empty)."""
        ...

    def chunk(self, prompt: int, seq: Sequence, events: list[TokenEvent]) -> bytes:
        """One decode step of prompt `prompt`'s sequence as SSE bytes (may be empty)."""
        ...

    def tail(self, seqs: Seq[Sequence]) -> bytes:
        """Bytes after the last token: usage chunk if asked, then `data: [DONE]`."""
        ...

    def full(self, seqs: Seq[Sequence]) -> Any:
        """The non-streaming JSON body."""
        ...


class _OpenAI:
    object_full: str
    object_chunk: str
    id_prefix: str

    def __init__(self, model: str, include_usage: bool = False,
                 continuous_usage: bool = False, *, echo: tuple[str, ...] = (),
                 logprobs: int | None = None) -> None:
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.continuous_usage = continuous_usage and include_usage
        self.echo = echo
        """Per prompt: text each of its choices starts with (empty: no echo)."""
        self.logprobs = logprobs
        """Top entries per token (0: the sampled token's only); None: no logprobs."""

    def _envelope(self, choices: list[dict[str, Any]], obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": choices}

    def _piece(self, prompt: int, seq: Sequence, ev: TokenEvent) -> dict[str, Any] | None:
        raise NotImplementedError

    def _token_logprob(self, seq: Sequence, ev: TokenEvent) -> TokenLogprob:
        c = seq.choices[ev.index]
        return seq.engine.logprobs.one(c.seed, len(c.ids) - 1, ev.token_id, self.logprobs or 0)

    def head(self, seqs: Seq[Sequence]) -> bytes:
        return b""

    def chunk(self, prompt: int, seq: Sequence, events: list[TokenEvent]) -> bytes:
        choices = [c for c in (self._piece(prompt, seq, ev) for ev in events) if c is not None]
        if not choices:
            return b""
        body = self._envelope(choices, self.object_chunk)
        if self.continuous_usage:
            body["usage"] = usage([seq])
        return sse(body)

    def tail(self, seqs: Seq[Sequence]) -> bytes:
        if not self.include_usage:
            return DONE
        body = self._envelope([], self.object_chunk)
        body["usage"] = usage(seqs)
        return sse(body) + DONE


class CompletionFormat(_OpenAI):
    object_full = object_chunk = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, model: str, include_usage: bool = False,
                 continuous_usage: bool = False, *, echo: tuple[str, ...] = (),
                 logprobs: int | None = None) -> None:
        super().__init__(model, include_usage, continuous_usage, echo=echo, logprobs=logprobs)
        self._offsets: dict[int, int] = {}  # choice index -> text_offset of its next token

    def _piece(self, prompt: int, seq: Sequence, ev: TokenEvent) -> dict[str, Any] | None:
        index = prompt * seq.n + ev.index
        first = index not in self._offsets
        if not (ev.text or ev.finish_reason or self.logprobs is not None
                or (first and self.echo)):
            return None
        text, logprobs = ev.text, None
        if first and self.echo:
            text = self.echo[prompt] + text
        if self.logprobs is not None:
            entries: list[TokenLogprob | None] = []
            if first and self.echo:
                entries += seq.engine.logprobs.prompt(seq.prompt_ids, self.logprobs)
            entries.append(self._token_logprob(seq, ev))
            logprobs = completion_logprobs(entries, seq.engine.logprobs, seq.prompt_ids,
                                           self._offsets.get(index, 0))
            self._offsets[index] = logprobs["text_offset"][-1] + len(logprobs["tokens"][-1])
        else:
            self._offsets.setdefault(index, 0)
        return {"index": index, "text": text, "logprobs": logprobs,
                "finish_reason": ev.finish_reason, "stop_reason": None}

    def full(self, seqs: Seq[Sequence]) -> dict[str, Any]:
        choices = []
        for prompt, seq in enumerate(seqs):
            model = seq.engine.logprobs
            for c in seq.choices:
                text, logprobs = c.text, None
                if self.echo:
                    text = self.echo[prompt] + text
                if self.logprobs is not None:
                    entries: list[TokenLogprob | None] = []
                    if self.echo:
                        entries += model.prompt(seq.prompt_ids, self.logprobs)
                    entries += model.generated(c.seed, c.ids, self.logprobs)
                    logprobs = completion_logprobs(entries, model, seq.prompt_ids)
                choices.append({"index": prompt * seq.n + c.index, "text": text,
                                "logprobs": logprobs, "finish_reason": c.finish_reason,
                                "stop_reason": None})
        body = self._envelope(choices, self.object_full)
        body["usage"] = usage(seqs)
        return body


class ChatFormat(_OpenAI):
    object_full = "chat.completion"
    object_chunk = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def head(self, seqs: Seq[Sequence]) -> bytes:
        # vLLM opens every choice's stream with an empty assistant delta; with `echo`, a second
        # chunk carries the echoed last message.
        seq = seqs[0]
        choices = [{"index": c.index, "delta": {"role": "assistant", "content": ""},
                    "logprobs": None, "finish_reason": None} for c in seq.choices]
        out = sse(self._envelope(choices, self.object_chunk))
        if self.echo and self.echo[0]:
            echoed = [{"index": c.index, "delta": {"content": self.echo[0]}, "logprobs": None,
                       "finish_reason": None} for c in seq.choices]
            out += sse(self._envelope(echoed, self.object_chunk))
        return out

    def _piece(self, prompt: int, seq: Sequence, ev: TokenEvent) -> dict[str, Any] | None:
        if not (ev.text or ev.finish_reason or self.logprobs is not None):
            return None
        logprobs = None
        if self.logprobs is not None:
            logprobs = chat_logprobs([self._token_logprob(seq, ev)])
        return {"index": ev.index, "delta": {"content": ev.text}, "logprobs": logprobs,
                "finish_reason": ev.finish_reason, "stop_reason": None}

    def full(self, seqs: Seq[Sequence]) -> dict[str, Any]:
        seq = seqs[0]
        prefix = self.echo[0] if self.echo else ""
        choices = []
        for c in seq.choices:
            logprobs = None
            if self.logprobs is not None:
                logprobs = chat_logprobs(seq.engine.logprobs.generated(c.seed, c.ids,
                                                                       self.logprobs))
            choices.append({"index": c.index,
                            "message": {"role": "assistant", "content": prefix + c.text,
                                        "tool_calls": []},
                            "logprobs": logprobs, "finish_reason": c.finish_reason,
                            "stop_reason": None})
        body = self._envelope(choices, self.object_full)
        body["usage"] = usage(seqs)
        return body


class GenerateFormat:
    """SGLang's native `/generate`: streamed chunks carry the whole text so far and meta_info."""

    def __init__(self, rid: str | None) -> None:
        self.rid = rid or uuid.uuid4().hex

    def _meta(self, seq: Sequence, index: int) -> dict[str, Any]:
        c = seq.choices[index]
        reason: dict[str, Any] | None = None
        if c.finish_reason == "length":
            reason = {"type": "length", "length": c.tokens}
        elif c.finish_reason == "stop":
            reason = {"type": "stop", "matched": None}
        return {"id": self.rid if seq.n == 1 else f"{self.rid}_{index}",
                "finish_reason": reason, "prompt_tokens": seq.prompt_tokens,
                "completion_tokens": c.tokens, "cached_tokens": seq.cached_tokens,
                "e2e_latency": round(seq.engine.clock() - seq.arrival_s, 6)}

    def _one(self, seq: Sequence, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {"text": seq.choices[index].text[: seq.choices[index].emitted],
                "meta_info": self._meta(seq, index)}
        if seq.n > 1:
            body["index"] = index
        return body

    def head(self, seqs: Seq[Sequence]) -> bytes:
        return b""

    def chunk(self, prompt: int, seq: Sequence, events: list[TokenEvent]) -> bytes:
        return b"".join(sse(self._one(seq, ev.index)) for ev in events
                        if ev.text or ev.finish_reason)

    def tail(self, seqs: Seq[Sequence]) -> bytes:
        return DONE

    def full(self, seqs: Seq[Sequence]) -> Any:
        seq = seqs[0]
        if seq.n == 1:
            return self._one(seq, 0)
        return [self._one(seq, i) for i in range(seq.n)]
