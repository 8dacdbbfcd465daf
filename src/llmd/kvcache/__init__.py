"""Tokenization, chat rendering, chained block keys and KV-event decoding shared by the simulator
and the EPP."""

from __future__ import annotations

from llmd.kvcache.chat import message_text, render_chat
from llmd.kvcache.chunked import ChunkedTokenizer
from llmd.kvcache.events import (
    END_SEQ,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    EventDecodeError,
    EventDialect,
    KvEvent,
    decode_batch,
    decode_event,
    decode_message,
    decode_replay,
    normalize_hash,
    replay_request,
)
from llmd.kvcache.hashing import BlockHasher, block_hashes, root_hash
from llmd.kvcache.index import PrefixIndex, chain_root
from llmd.kvcache.prompts import ChatTemplate, PromptTokenizer, load_prompt_tokenizer
from llmd.kvcache.tokenizer import BuiltinTokenizer, HFTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "AllBlocksCleared",
    "BlockHasher",
    "BlockRemoved",
    "BlockStored",
    "BuiltinTokenizer",
    "ChatTemplate",
    "ChunkedTokenizer",
    "END_SEQ",
    "EventBatch",
    "EventDecodeError",
    "EventDialect",
    "HFTokenizer",
    "KvEvent",
    "PrefixIndex",
    "PromptTokenizer",
    "Tokenizer",
    "block_hashes",
    "chain_root",
    "decode_batch",
    "decode_event",
    "decode_message",
    "decode_replay",
    "load_prompt_tokenizer",
    "load_tokenizer",
    "message_text",
    "normalize_hash",
    "render_chat",
    "replay_request",
    "root_hash",
]
