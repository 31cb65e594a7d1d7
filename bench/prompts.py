"""What each request sends: text prompts of exact token length (the default), token-id prompts, a shared prefix, or
rows of a prompt file; deterministic per (seed, seq), so a request's prompt does not depend on the sharding.

Text (prompt_format "text"): the served model's own tokenizer makes the prompt, the way vllm bench's random dataset
does (vllm/benchmarks/datasets.py, gen_prompt_decode_to_target_len): draw n random ids from the tokenizer's ordinary
range, decode them to text, re-encode; while the count is off, cut the re-encoded ids (too long) or append fresh
random ids (too short) and decode again, at most MAX_ADJUST times. Decoded random ids re-encode a few percent longer
(BPE merges across the joins), so a second or third round usually lands exactly; a prompt still off is sent anyway
and counted (PromptMaker.n_inexact), and its true length comes back in the server's usage like every other count.
The server tokenizes this text exactly as it would a real client's: that cost is part of what is measured.

Token ids (prompt_format "token-ids"): bench.workload's random ids, sent as a list the server never tokenizes. Cheaper
for the server's frontend, so runs in this format are labelled and never compared silently with text runs.

Shared prefix (prefix_len > 0): one prefix of prefix_len tokens, made from the run's seed (the same for every level, as
a system prompt would be), before each request's own input_len tokens; prefix caching then shows up. A prompt file
(JSONL, one object per line: {"prompt": TEXT} or {"input_len": N}, each with an optional "output_len") is used in
order, request seq taking row seq % rows; text rows are sent as they are. With "t" on every row (seconds after the
level's start, never decreasing) the file is a trace: the level replays it, one request per row at its arrival time,
as an open loop capped by the level's concurrency (a request that finds every user busy goes late: queue time).

The tokenizer comes from resolve_tokenizer (parent side, once per run): an explicit path, the dummy model directory
Melt wrote, a local model directory, the Hugging Face cache, or for the simulator Melt's BPE for its vocabulary. The
load-generator shards get only its path and load it once each.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.config import LengthRange
from bench.workload import _lengths, _rng, id_range, request_shape

MAX_ARRIVAL_S = 86_400.0           # a trace's arrival offsets: finite, at most a day
MAX_ADJUST = 8                     # decode/encode rounds before a text prompt is sent as it is
PROMPT_FILE_MAX_BYTES = 256 << 20  # a prompt file is read whole by every load-generator shard
_PREFIX_SEQ = -1                   # the prefix's own random stream: (seed, -1) is never a request's


class PromptError(ValueError):
    """A prompt source that cannot be used (no tokenizer, bad prompt file): said before anything is sent."""


@dataclass(frozen=True)
class PromptRow:
    text: str | None = None
    input_len: int | None = None
    output_len: int | None = None
    t: float | None = None          # trace replay: seconds after the level's start at which the request arrives


def load_prompt_file(path: str | Path) -> list[PromptRow]:
    """Parse a JSONL prompt file; PromptError naming the line on anything malformed. Nothing in it is executed."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
    except OSError as e:
        raise PromptError(f"prompt file {p}: {e.strerror or e}") from None
    if size > PROMPT_FILE_MAX_BYTES:
        raise PromptError(f"prompt file {p} is {size / 2**20:.0f} MiB; at most {PROMPT_FILE_MAX_BYTES >> 20} MiB")
    rows: list[PromptRow] = []
    with p.open("rb") as fh:
        for no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as e:
                raise PromptError(f"prompt file {p} line {no}: not JSON ({e})") from None
            if not isinstance(obj, dict):
                raise PromptError(f"prompt file {p} line {no}: expected an object like "
                                  '{"prompt": "...", "output_len": 128} or {"input_len": 512}')
            unknown = set(obj) - {"prompt", "text", "input_len", "output_len", "t"}
            if unknown:
                raise PromptError(f"prompt file {p} line {no}: unknown keys {sorted(unknown)}")
            text = obj.get("prompt", obj.get("text"))
            n_in, n_out = obj.get("input_len"), obj.get("output_len")
            if (text is None) == (n_in is None):
                raise PromptError(f"prompt file {p} line {no}: give either \"prompt\" (text) or \"input_len\"")
            if text is not None and (not isinstance(text, str) or not text):
                raise PromptError(f"prompt file {p} line {no}: \"prompt\" must be a non-empty string")
            for key, v in (("input_len", n_in), ("output_len", n_out)):
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                    raise PromptError(f"prompt file {p} line {no}: {key} must be a whole number >= 1")
            t = obj.get("t")
            if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= MAX_ARRIVAL_S):
                raise PromptError(f"prompt file {p} line {no}: \"t\" (arrival, seconds) must be a number from 0 to "
                                  f"{MAX_ARRIVAL_S:g}")
            if t is not None and rows and (rows[-1].t is None or t < rows[-1].t):
                raise PromptError(f"prompt file {p} line {no}: arrival times \"t\" must be given on every row and "
                                  "never decrease (a trace is replayed in order)")
            if t is None and rows and rows[-1].t is not None:
                raise PromptError(f"prompt file {p} line {no}: no \"t\": a trace gives every row an arrival time")
            rows.append(PromptRow(text=text, input_len=n_in, output_len=n_out, t=None if t is None else float(t)))
    if not rows:
        raise PromptError(f"prompt file {p} has no prompts")
    return rows


def trace_arrivals(rows: list[PromptRow] | None) -> list[float] | None:
    """The arrival offsets (s) of a trace (a prompt file whose rows carry "t"), else None."""
    return [r.t for r in rows] if rows and rows[0].t is not None else None


class TextTokenizer:
    """One tokenizer.json loaded with the `tokenizers` library, plus the id range prompts are drawn from."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        from catalog.tokenizer import prompt_id_range

        text = Path(path).read_text(encoding="utf-8")
        self.tok = Tokenizer.from_str(text)
        self.lo, self.hi = prompt_id_range(json.loads(text))

    def count(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def fit(self, rng: np.random.Generator, n: int, head: str = "", head_n: int = 0) -> tuple[str, bool]:
        """head + text of n random tokens such that the whole encodes to exactly head_n + n tokens (or the closest
        reached in MAX_ADJUST rounds); returns (prompt, exact)."""
        # The batch calls, with one item: unlike encode/decode they release the GIL while the tokenizer works, so a
        # thread making prompts (PromptMaker.run_ahead) does not stall the shard's event loop.
        tok, target = self.tok, head_n + n
        ids = rng.integers(self.lo, self.hi, size=n).tolist()
        prompt = head
        for _ in range(MAX_ADJUST):
            prompt = head + tok.decode_batch([ids])[0]
            enc = tok.encode_batch([prompt], add_special_tokens=False)[0].ids
            m = len(enc)
            if m == target:
                return prompt, True
            # the ids the text really encodes to (without a head: the encoding just made, one encode a round)
            canon = tok.encode_batch([prompt[len(head):]], add_special_tokens=False)[0].ids if head else enc
            if m > target:
                ids = canon[: max(1, len(canon) - (m - target))]
            else:
                ids = canon + rng.integers(self.lo, self.hi, size=target - m).tolist()
        return prompt, False


class PromptMaker:
    """request(seq) -> (prompt: str or int32 array, max_tokens). Built once per load-generator shard."""

    def __init__(self, *, prompt_format: str, input_len: LengthRange, output_len: LengthRange, seed: int,
                 vocab_size: int | None = None, tokenizer_path: str | None = None, prefix_len: int = 0,
                 prefix_seed: int = 0, prompt_file: str | None = None):
        self.format, self.input_len, self.output_len, self.seed = prompt_format, input_len, output_len, seed
        self.vocab_size = vocab_size
        self.rows = load_prompt_file(prompt_file) if prompt_file else None
        self.arrivals = trace_arrivals(self.rows)  # trace replay: request k (after warm-up) arrives at go + arrivals[k]
        needs_text = prompt_format == "text" and not (self.rows and all(r.text is not None for r in self.rows))
        if needs_text and not tokenizer_path:
            raise PromptError("text prompts need the served model's tokenizer (none was found)")
        self.tok = TextTokenizer(tokenizer_path) if tokenizer_path and needs_text else None
        self.n_inexact = 0
        self.last_in_tokens: int | None = None  # exact token count of the prompt request() last gave (None: unknown)
        self.prefix_text, self.prefix_ids = "", np.zeros(0, dtype=np.int32)
        if prefix_len:
            rng = _rng(prefix_seed, _PREFIX_SEQ)
            if self.tok is not None:
                self.prefix_text, _ = self.tok.fit(rng, prefix_len)  # its true count is prefix_n, used below
                # the prefix ends at a line break, so the request's own text cannot merge into its last tokens
                self.prefix_text += "\n"
                self.prefix_n = self.tok.count(self.prefix_text)
            else:
                lo, hi = id_range(vocab_size)
                self.prefix_ids = rng.integers(lo, hi, size=prefix_len, dtype=np.int32)
        self.prefix_len = prefix_len
        self._ready: dict[int, tuple] = {}
        self.n_inline = 0          # prompts made on the hot path (not ready in time): each cost the event loop
        self._ahead: threading.Thread | None = None
        self._stop_ahead = threading.Event()

    @property
    def costly(self) -> bool:
        """Making a prompt costs milliseconds (text through a tokenizer); token ids cost microseconds."""
        return self.tok is not None

    def prefetch(self, seqs) -> None:
        """Make the prompts of `seqs` now (before a level's measured phase), as vllm bench makes its whole dataset up
        front: an exact-length text prompt costs the client milliseconds of tokenizer work, which inside the measured
        phase would delay other users' sends and reads (seen on an H200 at c=128: -35% output tok/s)."""
        if self.costly:
            for q in seqs:
                if q not in self._ready:
                    self._ready[q] = self._make(q)

    def run_ahead(self, taken, lookahead: int, mine=None) -> None:
        """For levels of unknown length (duration, steady rule): a thread keeps the prompts of the next `lookahead`
        requests after `taken()` (the level's shared request counter) ready. The tokenizer releases the GIL while it
        works, so the event loop keeps its core; every shard makes every request's prompt (any shard may take any
        request), which costs client CPU, never measured time. `mine(seq)`: only those requests (a deployment's
        targets each have their own maker)."""
        if not self.costly or self._ahead is not None:
            return

        def prune(v: int) -> None:
            for q in [q for q in list(self._ready) if q < v]:  # taken by another shard (list(): atomic)
                self._ready.pop(q, None)

        def loop() -> None:
            nxt = 0
            while not self._stop_ahead.is_set():
                v = taken()
                nxt = max(nxt, v)  # never make a prompt the counter has passed
                if nxt >= v + lookahead:
                    prune(v)
                    self._stop_ahead.wait(0.005)
                    continue
                if len(self._ready) > 2 * lookahead:  # falling behind: still hold no more than the window
                    prune(v)
                if nxt not in self._ready and (mine is None or mine(nxt)):
                    self._ready[nxt] = self._make(nxt)
                nxt += 1

        self._ahead = threading.Thread(target=loop, name="melt-prompts-ahead", daemon=True)
        self._ahead.start()

    def close(self) -> None:
        self._stop_ahead.set()
        if self._ahead is not None:
            self._ahead.join(timeout=5)

    def request(self, seq: int):
        """(prompt, max_tokens) of request `seq`; counts the prompts sent off their exact length (n_inexact) and
        those made here rather than ahead (n_inline). Called by one thread, the shard's event loop."""
        got = self._ready.pop(seq, None)
        if got is None:
            if self.costly:
                self.n_inline += 1
            got = self._make(seq)
        prompt, n_out, exact, self.last_in_tokens = got
        self.n_inexact += not exact
        return prompt, n_out

    def arrival_s(self, k: int) -> float:
        """Trace replay: seconds after "go" at which measured request k arrives. Past the trace's end it is replayed
        again, each pass starting one span (its length plus one mean gap) after the last."""
        a = self.arrivals
        passes, i = divmod(k, len(a))
        span = (a[-1] - a[0]) * len(a) / (len(a) - 1) if len(a) > 1 else 1.0
        return a[i] + passes * max(span, 1e-3)

    def arrivals_before(self, seconds: float) -> int:
        """How many measured requests of the (repeated) trace arrive before `seconds` after "go"."""
        n, k = 0, 0
        while self.arrival_s(k) < seconds and n < (1 << 40):
            n, k = n + 1, k + 1
        return n

    @classmethod
    def for_plan(cls, plan) -> "PromptMaker":
        return cls(prompt_format=plan.prompt_format, input_len=plan.input_len, output_len=plan.output_len,
                   seed=plan.seed, vocab_size=plan.vocab_size, tokenizer_path=plan.tokenizer_path,
                   prefix_len=plan.prefix_len, prefix_seed=plan.prefix_seed, prompt_file=plan.prompt_file)

    def _make(self, seq: int):
        in_len, out_len = self.input_len, self.output_len
        if self.rows is not None:
            row = self.rows[seq % len(self.rows)]
            if row.output_len is not None:
                out_len = LengthRange(min=row.output_len, max=row.output_len)
            if row.text is not None:  # a file's own text: its token count is the server's to say
                return self.prefix_text + row.text, out_len.sample(float(_rng(self.seed, seq).random())), True, None
            in_len = LengthRange(min=row.input_len, max=row.input_len)
        if self.format == "token-ids":
            ids, n_out = request_shape(seq, in_len, out_len, self.seed, self.vocab_size)
            return ((np.concatenate([self.prefix_ids, ids]) if self.prefix_len else ids), n_out, True,
                    len(ids) + (len(self.prefix_ids) if self.prefix_len else 0))
        rng = _rng(self.seed, seq)
        n_in, n_out = _lengths(rng, in_len, out_len)
        if self.prefix_len:
            prompt, exact = self.tok.fit(rng, n_in, self.prefix_text, self.prefix_n)
        else:
            prompt, exact = self.tok.fit(rng, n_in)
        return prompt, n_out, exact, (n_in + (self.prefix_n if self.prefix_len else 0)) if exact else None


# ---- which tokenizer a run's text prompts use (parent side) -------------------------------------------------------

def hf_cache_tokenizer(model: str) -> Path | None:
    """tokenizer.json of `model` (an HF id) in the local Hugging Face cache, if it is there. No network."""
    if "/" not in model or model.startswith(("/", ".", "~")):
        return None
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    roots.append(Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    for root in roots:
        repo = root / ("models--" + model.replace("/", "--"))
        ref = repo / "refs" / "main"
        if ref.is_file():
            cand = repo / "snapshots" / ref.read_text().strip() / "tokenizer.json"
            if cand.is_file():
                return cand
        snaps = sorted((repo / "snapshots").glob("*/tokenizer.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        if snaps:
            return snaps[0]
    return None


def _tokenizer_in(path: Path) -> Path | None:
    if path.is_file() and path.name.endswith(".json"):
        return path
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    return None


def resolve_tokenizer(*, explicit: str | None, model: str, engine_kind: str, model_dir: str | None = None,
                      catalog_vocab: int | None = None, simulated_server: bool = False) -> tuple[Path, str]:
    """(tokenizer.json path, how it was found) for a run's text prompts, or PromptError saying what to pass.

    model_dir: the directory the engine was started on (the dummy-model dir Melt wrote, or a local model dir);
    catalog_vocab: the catalog vocabulary of `model`, used for the simulator (which tokenizes with Melt's BPE)."""
    if explicit:
        p = _tokenizer_in(Path(explicit).expanduser())
        if p is None:
            raise PromptError(f"--tokenizer {explicit}: not a tokenizer.json file or a directory holding one")
        return p, f"given: {p}"
    if (engine_kind == "sim" or simulated_server) and catalog_vocab:
        from catalog.tokenizer import tokenizer_file

        return tokenizer_file(catalog_vocab), f"Melt BPE for vocab {catalog_vocab} (the simulator's own)"
    for cand in (model_dir, model):
        if cand:
            p = _tokenizer_in(Path(cand).expanduser())
            if p is not None:
                return p, f"model directory: {p}"
    p = hf_cache_tokenizer(model)
    if p is not None:
        return p, f"Hugging Face cache: {p}"
    raise PromptError(
        f"text prompts need the tokenizer of {model!r} and none was found (not a local directory with tokenizer.json, "
        "not in the Hugging Face cache): pass --tokenizer PATH (a tokenizer.json or a model directory), or "
        "--prompt-format token-ids (labelled: the server then skips tokenizing)")
