"""Tokenization, chat rendering and chained block keys shared by the simulator and the EPP."""

from __future__ import annotations

from llmd.kvcache.chat import message_text, render_chat
from llmd.kvcache.hashing import BlockHasher, block_hashes, root_hash
from llmd.kvcache.index import PrefixIndex, chain_root
from llmd.kvcache.prompts import ChatTemplate, PromptTokenizer, load_prompt_tokenizer
from llmd.kvcache.tokenizer import BuiltinTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "BlockHasher",
    "BuiltinTokenizer",
    "ChatTemplate",
    "HFTokenizer",
    "PrefixIndex",
    "PromptTokenizer",
    "Tokenizer",
    "block_hashes",
    "chain_root",
    "load_prompt_tokenizer",
    "load_tokenizer",
    "message_text",
    "render_chat",
    "root_hash",
]
