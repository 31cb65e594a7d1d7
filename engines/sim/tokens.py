"""The simulator's tokenizer and its generated text.

Text prompts are tokenized for real with Melt's byte-level BPE for the simulated model's vocabulary
(catalog/tokenizer.py): the same tokenizer a dummy-weight vLLM of that model serves with, and the one the load
generator makes its exact-length text prompts with, so usage.prompt_tokens is the true count. A chat request
additionally counts CHAT_TOKENS_PER_MESSAGE per message and CHAT_TOKENS_GENERATION_PROMPT once, standing in for the
chat template's role markers. Token-id prompts (lists of ints) are counted exactly: len(list).

Generated text: token i of a completion is WORDS[i % len(WORDS)], a short non-empty string with a leading space, so
the text reads as words and re-tokenizes (by the rule above) to exactly the number of generated tokens.
"""
from __future__ import annotations

import zlib

CHAT_TOKENS_PER_MESSAGE = 4   # e.g. "<|im_start|>", role, "\n", "<|im_end|>"
CHAT_TOKENS_GENERATION_PROMPT = 3

WORDS: tuple[str, ...] = tuple(" " + w for w in (
    "the sim engine emits one word per token so streams look like text while every count stays exact and cheap "
    "to produce at high concurrency on a small machine with many open connections to serve without any real model "
    "weights loaded anywhere here"
).split())
_N = len(WORDS)
_CYCLE = "".join(WORDS)
_CUM = [0]
for _w in WORDS:
    _CUM.append(_CUM[-1] + len(_w))
_REPEAT = 64  # precomputed cycles; longer spans fall back to a join
_BIG = _CYCLE * (_REPEAT + 1)
_BIG_BYTES = _BIG.encode()


class TextTokenizer:
    """count(text) and ids(text) through the BPE of a vocabulary size (trained/cached on first use)."""

    def __init__(self, vocab_size: int):
        from tokenizers import Tokenizer

        from catalog.tokenizer import tokenizer_file

        self.tok = Tokenizer.from_file(str(tokenizer_file(vocab_size)))

    def ids(self, text_: str) -> list[int]:
        return self.tok.encode(text_, add_special_tokens=False).ids

    def count(self, text_: str) -> int:
        return len(self.ids(text_))

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def _span(start: int, n: int) -> tuple[int, int] | None:
    if n > (_REPEAT - 1) * _N:
        return None
    a = _CUM[start % _N]
    full, rest = divmod(n, _N)
    length = full * len(_CYCLE) + (_CUM[(start % _N) + rest] - a if (start % _N) + rest <= _N
                                   else (len(_CYCLE) - a) + _CUM[(start % _N) + rest - _N])
    return a, a + length


def text_bytes(start: int, n: int) -> bytes:
    """UTF-8 text of generated tokens [start, start + n)."""
    if n <= 0:
        return b""
    span = _span(start, n)
    if span is None:
        return "".join(WORDS[(start + i) % _N] for i in range(n)).encode()
    return _BIG_BYTES[span[0]:span[1]]


def text(start: int, n: int) -> str:
    return text_bytes(start, n).decode()
