"""Synthetic workload: random token ids and per-request lengths, deterministic per (seed, seq).

The ids are what bench.prompts turns into text prompts (the default) or sends as they are (the token-ids
format: vLLM, SGLang and TRT-LLM all accept `prompt` as a list of ints, which the server then never
tokenizes). Token-id prompts draw from [1000, min(vocab, 30000)): above the special/control tokens of common
vocabularies, below every real vocabulary size. Every request gets fresh random ids, so the prefix cache
cannot shortcut prefill (unless a shared prefix is asked for).

Everything derives from (seed, seq) alone, so request `seq` gets the same prompt and lengths however the
level is sharded over load-generator processes, and `make_prompts(n, ...)[i]` is request i's prompt.
"""
from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

from bench.config import LengthRange

ID_LO = 1000
ID_HI = 30000

# What each endpoint and prompt format sends, for the CLI and the Launch page: token ids skip the server's tokenizer,
# which matters where the server's frontend is the bottleneck (vLLM on an H100 at c >= 512: docs/PERFORMANCE.md).
ENDPOINT_HELP = ("completions: /v1/completions with the prompt as it is; chat: /v1/chat/completions with the prompt "
                 "as one user message (the chat template adds its tokens; true counts from the server's usage)")
PROMPT_FORMAT_HELP = ("text (default): random text of exact token length through the served model's tokenizer, "
                      "tokenized by the server as a real client's would be; token-ids: lists of token ids the server "
                      "never tokenizes (cheaper for its frontend: numbers not comparable with text runs)")


def id_range(vocab_size: int | None) -> tuple[int, int]:
    """Half-open range [lo, hi) of token ids that are safe to send for a vocabulary of `vocab_size`."""
    hi = ID_HI if vocab_size is None else min(vocab_size, ID_HI)
    if hi < 2:
        raise ValueError(f"vocab_size {vocab_size} is too small to draw prompt tokens from")
    # Tiny test vocabularies: stay clear of the low (special) ids as far as the vocabulary allows.
    lo = ID_LO if hi >= 2 * ID_LO else max(1, hi // 2)
    return lo, hi


_M64 = (1 << 64) - 1
_KEY_TAG = 0x4D454C54  # "MELT": second key word, so our streams differ from Philox(key=seed)'s
_local = threading.local()


def _rng(seed: int, seq: int) -> np.random.Generator:
    """The random stream of request `seq`: Philox, a counter-based generator, keyed by the seed with the
    counter starting at seq << 128, so streams of different requests never overlap.

    The hot path calls this once per request: re-keying one Generator (per thread) costs a third of
    building a new one."""
    st = getattr(_local, "st", None)
    if st is None:
        bg = np.random.Philox(key=0)
        st = _local.st = (bg, np.random.Generator(bg), {
            "bit_generator": "Philox",
            "state": {"counter": np.zeros(4, dtype=np.uint64), "key": np.zeros(2, dtype=np.uint64)},
            "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4, "has_uint32": 0, "uinteger": 0})
    bg, gen, state = st
    state["state"]["counter"][2:] = (seq & _M64, (seq >> 64) & _M64)
    state["state"]["key"][:] = (seed & _M64, _KEY_TAG)
    bg.state = state
    return gen


def _lengths(rng: np.random.Generator, input_len: LengthRange, output_len: LengthRange) -> tuple[int, int]:
    # Always consume exactly two uniforms, fixed lengths included, so the ids drawn next depend on
    # (seed, seq) only and never on the length distributions (each maps its uniform through its inverse CDF).
    u_in, u_out = rng.random(2)
    return input_len.sample(float(u_in)), output_len.sample(float(u_out))


def request_shape(seq: int, input_len: LengthRange, output_len: LengthRange, seed: int,
                  vocab_size: int | None = None) -> tuple[np.ndarray, int]:
    """(prompt token ids as an int32 array, output length) of request `seq`.

    The load generator's hot path uses this (an array serialises straight to JSON with orjson). The ids of
    `seq` do not depend on the length ranges beyond their count (the first n_in ids of one stream).
    """
    rng = _rng(seed, seq)
    n_in, n_out = _lengths(rng, input_len, output_len)
    lo, hi = id_range(vocab_size)
    return rng.integers(lo, hi, size=n_in, dtype=np.int32), n_out


def make_prompts(n: int, input_len: LengthRange, seed: int, vocab_size: int | None = None) -> list[list[int]]:
    """`n` random token-id prompts (request 0..n-1 of a level with this seed), lengths drawn from input_len."""
    if n < 0:
        raise ValueError("n must be >= 0")
    out = LengthRange(min=1, max=1)  # does not influence the prompt
    return [request_shape(i, input_len, out, seed, vocab_size)[0].tolist() for i in range(n)]


def output_len_for(seq: int, input_len: LengthRange, output_len: LengthRange, seed: int) -> int:
    """Requested output length of request `seq` (same draw as request_shape)."""
    return _lengths(_rng(seed, seq), input_len, output_len)[1]
