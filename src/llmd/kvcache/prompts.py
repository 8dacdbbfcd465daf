"""Request → token ids, as the engine serving the model computes them.

A precise prefix index matches the token ids an engine really cached, so the EPP must turn a
request into the same ids: a completions prompt is encoded with the tokenizer's special tokens
(BOS), as vLLM and SGLang do by default; chat messages are rendered with the model's chat
template and the result encoded without adding special tokens (the template writes them), as
vLLM's chat endpoint does.

`ChatTemplate` renders a Hugging Face chat template the way `transformers` does
(`apply_chat_template(..., tokenize=False)`): a sandboxed jinja2 environment with `trim_blocks`
and `lstrip_blocks`, the `loopcontrols` extension, a `tojson` filter that does not escape HTML,
and the `raise_exception` and `strftime_now` globals. The template comes from the model
directory's `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template` (a string, or
a list of named templates of which "default" is used).

`max_tokens` bounds the work on a huge prompt (a 16 MiB body would hold the EPP's event loop
for a second): only its first `max_tokens × CHARS_PER_TOKEN_BOUND` characters are encoded, and
of those only the tokens that the cut cannot have changed (all but the last `CUT_MARGIN`) are
returned, at most `max_tokens` of them.

`load_prompt_tokenizer(None)` is the built-in tokenizer with llmd's built-in chat format
(`render_chat`): exactly what `llmd sim` does without `--tokenizer`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmd.errors import ConfigError
from llmd.kvcache.chat import render_chat
from llmd.kvcache.chunked import ChunkedTokenizer
from llmd.kvcache.tokenizer import BuiltinTokenizer, HFTokenizer, Tokenizer

__all__ = ["ChatTemplate", "PromptTokenizer", "load_prompt_tokenizer"]


class ChatTemplate:
    """A model's jinja2 chat template, rendered as `transformers` renders it."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 name: str = "chat template") -> None:
        self.name = name
        self.bos_token, self.eos_token = bos_token, eos_token
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{name}: not a valid jinja2 template: {exc}") from exc

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ChatTemplate:
        """The template of a model directory (see the module docstring); ConfigError if none."""
        path = Path(model_dir)
        config = _json(path / "tokenizer_config.json")
        bos, eos = _token(config.get("bos_token")), _token(config.get("eos_token"))
        jinja_file = path / "chat_template.jinja"
        if jinja_file.is_file():
            return cls(jinja_file.read_text(), bos_token=bos, eos_token=eos,
                       name=str(jinja_file))
        source = config.get("chat_template")
        if isinstance(source, list):  # named templates, as transformers accepts
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
        if not isinstance(source, str):
            raise ConfigError(f"{path}: no chat template (neither chat_template.jinja nor a "
                              "chat_template in tokenizer_config.json)")
        return cls(source, bos_token=bos, eos_token=eos,
                   name=f"{path / 'tokenizer_config.json'}: chat_template")

    def render(self, messages: Sequence[Mapping[str, Any]], *,
               add_generation_prompt: bool = True, **extra: Any) -> str:
        """The prompt text; ValueError (the template's `raise_exception` included) if the
        template refuses the messages."""
        try:
            return self._template.render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except jinja2.TemplateError as exc:
            raise ValueError(f"{self.name}: {exc}") from exc


CHARS_PER_TOKEN_BOUND = 16
"""Characters per token that encoding a prompt's prefix assumes at most (BPE tokens are short)."""
CUT_MARGIN = 64
"""Tokens dropped before a cut: the cut may split a word, whose tokens then differ."""


@dataclass(frozen=True)
class PromptTokenizer:
    """The token ids an engine computes for a request's prompt."""

    tokenizer: Tokenizer
    render: Callable[[Sequence[Mapping[str, Any]]], str]
    """Chat messages → prompt text (the model's template, with the generation prompt)."""

    def completion_ids(self, prompt: str | Sequence[int], max_tokens: int | None = None
                       ) -> list[int]:
        """A completions `prompt`: text is encoded with special tokens, ids are kept."""
        if isinstance(prompt, str):
            return self._encode(prompt, True, max_tokens)
        return list(prompt if max_tokens is None else prompt[:max_tokens])

    def chat_ids(self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None = None
                 ) -> list[int]:
        """Chat messages, rendered and encoded without special tokens (the template has
        them). ValueError when the template refuses the messages."""
        return self._encode(self.render(messages), False, max_tokens)

    def _encode(self, text: str, special: bool, max_tokens: int | None) -> list[int]:
        if max_tokens is None:
            return self.tokenizer.encode(text, add_special_tokens=special)
        limit = max_tokens * CHARS_PER_TOKEN_BOUND
        if len(text) <= limit:
            return self.tokenizer.encode(text, add_special_tokens=special)[:max_tokens]
        ids = self.tokenizer.encode(text[:limit], add_special_tokens=special)
        return ids[:min(max_tokens, max(len(ids) - CUT_MARGIN, 0))]


def load_prompt_tokenizer(model_dir: str | Path | None, *, chunked: bool = False
                          ) -> PromptTokenizer:
    """For a model directory (`tokenizer.json` + its chat template), or the built-in tokenizer
    with llmd's built-in chat format when `model_dir` is None (what `llmd sim` uses).
    `chunked`: encode through a `ChunkedTokenizer` where the tokenizer allows it (the same ids,
    faster for prompts that share a prefix)."""
    if model_dir is None or str(model_dir) == "":
        tok: Tokenizer = BuiltinTokenizer()
        builtin = tok

        def render(messages: Sequence[Mapping[str, Any]]) -> str:
            return render_chat(messages, bos=builtin.bos_token, eos=builtin.eos_token)

        return PromptTokenizer(tok, render)
    path = Path(model_dir)
    if path.is_file():  # a tokenizer.json: its directory holds the template
        path = path.parent
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(f"{model_dir}: no tokenizer.json there")
    template = ChatTemplate.from_dir(path)
    hf = HFTokenizer(path / "tokenizer.json")
    if chunked and ChunkedTokenizer.applies(hf):
        return PromptTokenizer(ChunkedTokenizer(hf), template.render)
    return PromptTokenizer(hf, template.render)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' override: jinja2's own tojson escapes HTML characters.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token(value: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""
