"""Plain-data tests of the block pool and the output generator."""

from __future__ import annotations

import pytest

from llmd.kvcache import BuiltinTokenizer
from llmd.sim import BlockPool
from llmd.sim.text import Choice, Vocabulary


def test_pool_shares_keyed_blocks_and_counts_usage() -> None:
    pool = BlockPool(10, 16)
    a = pool.allocate([1, 2, 3], private=2)
    b = pool.allocate([1, 2, 4], private=1)
    assert (a.cached_blocks, b.cached_blocks) == (0, 2)
    assert b.stored == (4,) and pool.used == 4 + 3
    pool.free(a)
    assert pool.used == 3 + 1  # 1, 2, 4 and a private block held by b; 3 cached but free
    pool.free(b)
    assert pool.used == 0 and pool.cached == 4 and pool.usage() == 0.0


def test_pool_evicts_lru_tail_first_and_refuses_when_pinned() -> None:
    pool = BlockPool(4, 16)
    pool.free(pool.allocate([1, 2, 3], private=0))
    new = pool.allocate([9], private=1)  # needs 2 of the 1 free + 3 cached: evicts 3 (tail)
    assert new.evicted == (3,) and pool.match([1, 2, 3]) == 2
    held = pool.allocate([1, 2], private=0)
    assert not pool.can_allocate([7, 8], private=0)  # only 0 free, all pinned
    with pytest.raises(MemoryError):
        pool.allocate([7, 8], private=0)
    pool.free(held)
    pool.free(new)
    assert pool.can_allocate([7, 8, 10, 11], private=0)


def test_pool_keeps_output_blocks_in_place_of_private_ones() -> None:
    pool = BlockPool(6, 16)
    a = pool.allocate([1, 2], private=3)
    # The output filled blocks 3, 4 and 5 (chained after 2): each is shared once full.
    assert [pool.commit(k) for k in (3, 4, 5)] == [True] * 3
    assert pool.match([1, 2, 3, 4, 5]) == 5 and pool.used == 5
    assert not pool.commit(2)  # already resident: it stays one block, nothing stored
    with pytest.raises(ValueError):
        pool.commit(6)  # the 3 private blocks are all filled
    pool.free(a, committed=[3, 4, 5])
    assert pool.used == 0 and pool.cached == 5 and pool.match([1, 2, 3, 4, 5]) == 5
    # The tail goes first: the output's last block, then back towards the prompt.
    b = pool.allocate([9], private=1)
    assert b.evicted == (5,)
    pool.free(b)
    other = pool.allocate([7, 8], private=1)
    assert other.evicted == (4, 3)
    pool.free(other)
    assert pool.match([1, 2]) == 2


def test_choice_stop_strings_hold_back_partial_matches() -> None:
    vocab = Vocabulary(BuiltinTokenizer())
    free = Choice(0, vocab, seed=1, length=40, eos_reason="length", stop=())
    text = "".join(free.step()[1] for _ in range(40))
    target = " " + text.split()[5] + " " + text.split()[6]
    cut = Choice(0, vocab, seed=1, length=40, eos_reason="length", stop=(target,))
    out = ""
    while cut.finish_reason is None:
        piece = cut.step()[1]
        out += piece
        assert target not in out
    assert cut.finish_reason == "stop" and out == text[: text.index(target)]


def test_choice_length_and_reason() -> None:
    vocab = Vocabulary(BuiltinTokenizer())
    c = Choice(0, vocab, seed=2, length=3, eos_reason="stop", stop=())
    ids = [c.step()[0] for _ in range(3)]
    assert c.finish_reason == "stop" and c.tokens == 3 and len(ids) == 3


@pytest.mark.parametrize("prefix", ["<s><|user|>\nHi</s>\n<|assistant|>\n", "Count:  ", ""])
def test_generated_text_re_encodes_to_its_ids(prefix: str) -> None:
    # A resent history (prefix + reply) must tokenize to the prompt's ids then the generated ids,
    # or the reply's cached blocks never match again.
    tok = BuiltinTokenizer()
    c = Choice(0, Vocabulary(tok), seed=3, length=64, eos_reason="length", stop=())
    text = "".join(c.step()[1] for _ in range(64))
    assert tok.decode(c.ids) == text
    assert tok.encode(prefix + text, add_special_tokens=False) == (
        tok.encode(prefix, add_special_tokens=False) + c.ids)
