"""Chat prompt rendering: messages → one prompt string, the same on every machine.

The template is the tiny-llama one (`../shared/fixtures/tiny-llama/chat_template.jinja`) written
out in Python, so no jinja is needed and every component renders byte-identical prompts:

    {bos}<|{role}|>\\n{content}{eos}\\n   ... one per message ...   <|assistant|>\\n

`content` may be a string or OpenAI content parts; text parts are joined with no separator and
other part types (images, audio) are skipped. A message without content renders as empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["message_text", "render_chat"]


def message_text(content: Any) -> str:
    """The text of one message's `content` (string, parts list, or None)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            str(p.get("text", "")) for p in content
            if isinstance(p, Mapping) and p.get("type") == "text"
        )
    raise ValueError("content must be a string or a list of content parts")


def render_chat(messages: Sequence[Mapping[str, Any]], *, bos: str = "<s>", eos: str = "</s>",
                add_generation_prompt: bool = True) -> str:
    """Render `messages` with the tiny-llama chat template. Raises ValueError on a bad message."""
    out = [bos]
    for m in messages:
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError("every message needs a string 'role'")
        out.append(f"<|{role}|>\n{message_text(m.get('content'))}{eos}\n")
    if add_generation_prompt:
        out.append("<|assistant|>\n")
    return "".join(out)
