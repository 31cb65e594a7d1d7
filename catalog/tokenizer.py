"""Byte-level BPE tokenizers for dummy-weight models, trained offline on the Python standard library's source.

Why: a real client sends text, and the server pays for tokenizing it (and for detokenizing what it streams back). On a
frontend-bound vLLM that cost is a quarter of the throughput (docs/PERFORMANCE.md), so a dummy model must carry a
tokenizer that does real work. A word-level vocabulary costs the server nothing; a byte-level BPE with a regex
pre-tokenizer (the GPT-2 / Llama-3 / Qwen family of tokenizers) does what the real ones do.

How: one *base* BPE is trained once per machine with the `tokenizers` library on the standard library's own .py files
(ships with every Python, no download; test suites left out: a third of the text for most of the merges, ~3 s on two
cores). Its ids are laid out as the trainer writes them: the special tokens (SPECIALS, ids 0..4), the 256 byte-level
symbols, then one token per merge in merge order. That order makes a tokenizer of any vocabulary size cheap to derive:
  - smaller than the base: keep the first merges (a prefix of a BPE merge list is a valid BPE);
  - larger (Qwen3's 151,936, Gemma 3's 262,208): pad with filler tokens that no merge produces, each spelled as two
    merged tokens run together, so they decode to the same kind of text as the rest: a dummy model's random output
    over its whole vocabulary streams back as that text, and a client drawing prompt ids over the whole vocabulary
    (vllm bench's random dataset) makes prompts of the same cost to the server as Melt's.
So every vocabulary size has exactly vocab_size entries and ids agree with the model's embedding size.

The standard library differs between Python versions, so two machines may train slightly different bases: every run
records the tokenizer's fingerprint (sha256 of its tokenizer.json) beside its prompts. The cache lives under the user's
cache directory (MELT_CACHE overrides), not MELT_HOME, so throw-away homes (the tests) reuse one base. Bottom floor:
imports nothing of Melt's.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sysconfig
from functools import lru_cache
from pathlib import Path

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
N_BYTES = 256
FIRST_MERGE_ID = len(SPECIALS) + N_BYTES   # ids below this are specials and single bytes
BASE_VERSION = 1                           # bump when the training recipe changes (a new base file name)
DERIVE_VERSION = 2                         # bump when derive() changes (new per-vocabulary file names)
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3"}


def cache_dir() -> Path:
    env = os.environ.get("MELT_CACHE")
    if env:
        return Path(env).expanduser() / "tokenizers"
    import platformdirs

    return Path(platformdirs.user_cache_dir("melt", appauthor=False)) / "tokenizers"


def corpus_files() -> list[Path]:
    """The standard library's .py files, sorted (training input), without test suites and vendored packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if not _SKIP_DIRS & set(p.relative_to(root).parts))


@contextlib.contextmanager
def _locked(path: Path):
    """One builder per file across processes (a sim server, its load generator and the tests start together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def train_base() -> dict:
    """Train the base BPE (tokenizer.json as a dict). Deterministic for a given standard library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    files = corpus_files()
    if not files:
        raise RuntimeError(f"no standard-library sources found under {sysconfig.get_paths()['stdlib']} to train a "
                           "tokenizer on")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1 << 20, min_frequency=2, show_progress=False, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((p.read_bytes().decode("utf-8", "replace") for p in files), trainer, length=len(files))
    d = json.loads(tok.to_str())
    vocab, merges = d["model"]["vocab"], d["model"]["merges"]
    # The layout the derivation relies on: specials, bytes, then one id per merge in order.
    if any(vocab.get(t) != i for i, t in enumerate(SPECIALS)) or len(vocab) != FIRST_MERGE_ID + len(merges) or any(
            vocab.get("".join(m)) != FIRST_MERGE_ID + i for i, m in enumerate(merges)):
        raise RuntimeError("unexpected BPE layout from the tokenizers library (ids not in merge order)")
    return d


def base_path() -> Path:
    """The cached base tokenizer.json, trained first if missing."""
    path = cache_dir() / f"bpe-base-v{BASE_VERSION}.json"
    if path.exists():
        return path
    with _locked(path):
        if not path.exists():
            _write_atomic(path, json.dumps(train_base(), ensure_ascii=False))
    return path


@lru_cache(maxsize=2)
def _base() -> dict:
    return json.loads(base_path().read_text())


def derive(base: dict, vocab_size: int) -> dict:
    """tokenizer.json (dict) with exactly `vocab_size` tokens, derived from a base BPE as the module docstring says."""
    if vocab_size < FIRST_MERGE_ID + 1:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level BPE (needs > {FIRST_MERGE_ID})")
    model = base["model"]
    merges = model["merges"][: vocab_size - FIRST_MERGE_ID]
    real = FIRST_MERGE_ID + len(merges)
    vocab = {t: i for t, i in model["vocab"].items() if i < real}
    # Fillers: each spells two merged tokens run together (a string no merge produces: the BPE never emits it), so a
    # filler decodes to the same kind of text as the merged tokens. A client that draws random ids over the whole
    # vocabulary (vllm bench's random dataset) then makes prompts that cost the server what Melt's do; fillers
    # spelled as markers ("<|pad_N|>") tokenized at 60% of the cost and made the two tools' prompts differ.
    inv = sorted(vocab, key=vocab.__getitem__)[FIRST_MERGE_ID:]
    k = 0
    while len(vocab) < vocab_size and inv:
        q, r = divmod(k, len(inv))  # a distinct (a, b) pair for every k < len(inv) ** 2
        a, b = inv[(r * 7919) % len(inv)], inv[(q + 7 * r + 1) % len(inv)]
        k += 1
        filler = a + b
        if filler not in vocab:
            vocab[filler] = len(vocab)
    n = len(vocab)
    while len(vocab) < vocab_size:  # a base with no merges (never in practice): plain markers
        filler = f"<|melt_pad_{n}|>"
        n += 1
        if filler not in vocab:
            vocab[filler] = len(vocab)
    out = dict(base)
    out["model"] = dict(model, vocab=vocab, merges=merges)
    return out


def tokenizer_json(vocab_size: int) -> dict:
    """The dummy tokenizer for a vocabulary of `vocab_size` (base trained and cached on first use)."""
    return derive(_base(), vocab_size)


def tokenizer_file(vocab_size: int) -> Path:
    """Path of a cached tokenizer.json for `vocab_size` (what the sim engine and the load generator load)."""
    path = cache_dir() / f"bpe-v{BASE_VERSION}.{DERIVE_VERSION}-{vocab_size}.json"
    if not path.exists():
        with _locked(path):
            if not path.exists():
                _write_atomic(path, json.dumps(tokenizer_json(vocab_size), ensure_ascii=False))
    return path


def fingerprint(path: str | Path) -> str:
    """Short sha256 of a tokenizer.json: which tokenizer made a run's prompts."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def prompt_id_range(tokenizer_dict: dict) -> tuple[int, int]:
    """[lo, hi) of ids to draw prompt tokens from, given a tokenizer.json dict.

    A Melt BPE: every id above the specials and single bytes (merged tokens and the fillers that spell them), as vllm
    bench draws over the whole vocabulary; the decoded text re-encodes close to its length. Any other tokenizer: every id of its model vocabulary clear of the added
    (special) tokens, which sit at the low end (ids 0..k) or the high end (Qwen's, Llama-3's) of the vocabulary."""
    model = tokenizer_dict.get("model") or {}
    vocab = model.get("vocab") or {}
    n_model = len(vocab)
    merges = model.get("merges") or []
    if model.get("type") == "BPE" and merges and all(vocab.get(t) == i for i, t in enumerate(SPECIALS)) and (
            len(vocab) >= FIRST_MERGE_ID + len(merges)):
        return FIRST_MERGE_ID, n_model  # a Melt BPE: merged tokens and fillers (which spell merged tokens)
    added = [a["id"] for a in tokenizer_dict.get("added_tokens") or [] if isinstance(a.get("id"), int)]
    low = [a for a in added if a < n_model // 2]
    high = [a for a in added if a >= n_model // 2]
    lo = max(low) + 1 if low else 0
    hi = min(high) if high else n_model
    if hi - lo < 2:
        raise ValueError("the tokenizer has no ordinary tokens to build prompts from")
    return lo, hi
