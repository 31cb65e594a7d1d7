"""Text prompts: Melt's offline BPE (built once, reused, any vocabulary size), exact token lengths through the
tokenizer, shared prefixes, prompt files (untrusted input, clear errors) and which tokenizer a run uses."""
from __future__ import annotations

import json
import os

import pytest
from tokenizers import Tokenizer

from bench.config import LengthRange as L
from bench.prompts import PromptError, PromptMaker, hf_cache_tokenizer, load_prompt_file, resolve_tokenizer
from catalog import tokenizer as T


def test_bpe_is_trained_once_offline_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("MELT_CACHE", str(tmp_path / "cache"))
    T._base.cache_clear()
    calls = []
    real_train = T.train_base
    monkeypatch.setattr(T, "train_base", lambda: calls.append(1) or real_train())
    a = T.tokenizer_file(32000)
    b = T.tokenizer_file(151936)
    T._base.cache_clear()
    c = T.tokenizer_file(128256)
    assert calls == [1]                                       # one training for every vocabulary size
    assert a.parent == tmp_path / "cache" / "tokenizers" and T.base_path().exists()
    assert T.fingerprint(a) == T.fingerprint(T.tokenizer_file(32000))   # cached file reused as it is
    for path, vs in ((a, 32000), (b, 151936), (c, 128256)):
        tok = Tokenizer.from_file(str(path))
        assert tok.get_vocab_size() == vs                     # exactly the model's vocabulary
        vocab = json.loads(path.read_text())["model"]["vocab"]
        assert sorted(vocab.values()) == list(range(vs))
    T._base.cache_clear()


def test_derived_vocab_layout():
    base = json.loads(T.base_path().read_text())
    n_merges = len(base["model"]["merges"])
    small = T.derive(base, 1000)
    assert len(small["model"]["merges"]) == 1000 - T.FIRST_MERGE_ID and len(small["model"]["vocab"]) == 1000
    size = T.FIRST_MERGE_ID + n_merges + 50
    big = T.derive(base, size)
    assert len(big["model"]["merges"]) == n_merges and len(big["model"]["vocab"]) == size
    assert T.prompt_id_range(big) == (T.FIRST_MERGE_ID, size)       # no specials or single bytes, as vllm bench
    assert T.prompt_id_range(small) == (T.FIRST_MERGE_ID, 1000)
    # a tokenizer of someone else's, specials at the top of the vocabulary (Qwen, Llama 3)
    other = {"model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(100)}, "merges": [["a", "b"]]},
             "added_tokens": [{"id": 98}, {"id": 99}]}
    assert T.prompt_id_range(other) == (0, 98)
    with pytest.raises(ValueError):
        T.derive(base, 100)
    # a filler spells two merged tokens: it decodes to the same kind of text (random output of a dummy model streams
    # back as it), and no encoding ever produces it
    tok = Tokenizer.from_str(json.dumps(big))
    filler = T.FIRST_MERGE_ID + n_merges
    text = tok.decode([filler])
    assert text and "melt_pad" not in text
    again = tok.encode(text, add_special_tokens=False).ids
    assert filler not in again and 2 <= len(again) <= 4


def _maker(**kw) -> PromptMaker:
    base = dict(prompt_format="text", input_len=L(min=512, max=512), output_len=L(min=16, max=16), seed=3,
                tokenizer_path=str(T.tokenizer_file(151936)))
    base.update(kw)
    return PromptMaker(**base)


def test_text_prompts_have_exact_token_lengths():
    tok = Tokenizer.from_file(str(T.tokenizer_file(151936)))
    m = _maker(input_len=L(min=20, max=700))
    seen = set()
    for q in range(60):
        text, n_out = m.request(q)
        assert isinstance(text, str) and n_out == 16
        from bench.workload import _lengths, _rng
        want, _ = _lengths(_rng(3, q), L(min=20, max=700), L(min=16, max=16))
        assert len(tok.encode(text, add_special_tokens=False).ids) == want
        seen.add(text)
    assert len(seen) == 60 and m.n_inexact == 0
    assert _maker().request(7) == _maker().request(7)                     # deterministic per (seed, seq)
    assert _maker().request(7) != _maker(seed=4).request(7)


def test_shared_prefix_text_and_ids():
    tok = Tokenizer.from_file(str(T.tokenizer_file(151936)))
    m = _maker(input_len=L(min=64, max=64), prefix_len=256, prefix_seed=9)
    a, b = m.request(0)[0], m.request(1)[0]
    assert a.startswith(m.prefix_text) and b.startswith(m.prefix_text) and a != b
    assert len(tok.encode(a, add_special_tokens=False).ids) == m.prefix_n + 64
    assert abs(m.prefix_n - 257) <= 1                                      # 256 tokens and the line break
    assert _maker(prefix_len=256, prefix_seed=9, seed=99).prefix_text == m.prefix_text  # same for every level
    ids = _maker(prompt_format="token-ids", tokenizer_path=None, input_len=L(min=10, max=10), prefix_len=5,
                 vocab_size=32000)
    p0, p1 = ids.request(0)[0], ids.request(1)[0]
    assert len(p0) == 15 and p0[:5].tolist() == p1[:5].tolist() and p0[5:].tolist() != p1[5:].tolist()


def test_prompt_file_rows_and_errors(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Translate: good morning", "output_len": 7}\n\n{"input_len": 30}\n')
    rows = load_prompt_file(f)
    assert [r.text for r in rows] == ["Translate: good morning", None] and rows[0].output_len == 7
    m = _maker(prompt_file=str(f))
    assert m.request(0) == ("Translate: good morning", 7)
    text, n_out = m.request(1)
    assert n_out == 16 and len(Tokenizer.from_file(str(T.tokenizer_file(151936))).encode(
        text, add_special_tokens=False).ids) == 30
    assert m.request(2)[0] == "Translate: good morning"                   # rows are used in order, cyclically
    cases = {"not json\n": "line 1: not JSON", '[1, 2]\n': "expected an object",
             '{"prompt": "a", "input_len": 3}\n': "either", '{"prompt": ""}\n': "non-empty",
             '{"input_len": -1}\n': "input_len must be", '{"input_len": 2, "cmd": "rm"}\n': "unknown keys",
             "\n\n": "no prompts"}
    for body, msg in cases.items():
        f.write_text(body)
        with pytest.raises(PromptError, match=msg):
            load_prompt_file(f)
    with pytest.raises(PromptError, match="No such file"):
        load_prompt_file(tmp_path / "missing.jsonl")


def test_text_without_tokenizer_says_what_to_do():
    with pytest.raises(PromptError, match="tokenizer"):
        _maker(tokenizer_path=None)


def test_resolve_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    tj = tmp_path / "dir" / "tokenizer.json"
    tj.parent.mkdir()
    tj.write_text("{}")
    assert resolve_tokenizer(explicit=str(tj.parent), model="x", engine_kind="vllm")[0] == tj
    with pytest.raises(PromptError, match="--tokenizer"):
        resolve_tokenizer(explicit=str(tmp_path), model="x", engine_kind="vllm")
    sim, how = resolve_tokenizer(explicit=None, model="Qwen/Qwen3-0.6B", engine_kind="sim", catalog_vocab=151936)
    assert sim == T.tokenizer_file(151936) and "simulator" in how
    ext, _ = resolve_tokenizer(explicit=None, model="Qwen/Qwen3-0.6B", engine_kind="openai", catalog_vocab=151936,
                               simulated_server=True)
    assert ext == sim                                                      # an external sim server: its own BPE
    assert resolve_tokenizer(explicit=None, model="m", engine_kind="vllm", model_dir=str(tj.parent))[0] == tj
    with pytest.raises(PromptError, match="--prompt-format token-ids"):
        resolve_tokenizer(explicit=None, model="org/model", engine_kind="vllm")
    snap = tmp_path / "hf" / "hub" / "models--org--model" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "tokenizer.json").write_text("{}")
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc")
    assert hf_cache_tokenizer("org/model") == snap / "tokenizer.json"
    assert resolve_tokenizer(explicit=None, model="org/model", engine_kind="vllm")[0] == snap / "tokenizer.json"
    assert hf_cache_tokenizer("/abs/path") is None and not os.environ.get("HF_HUB_CACHE")


def test_prompts_made_ahead_of_the_shared_counter():
    """Levels of unknown length: a thread keeps the next prompts ready (same prompts as made inline), drops the ones
    other shards took, and a prompt not ready in time is made inline and counted."""
    import time

    taken = [0]
    m = _maker(input_len=L(min=32, max=32))
    ref = _maker(input_len=L(min=32, max=32))
    m.prefetch(range(4))
    assert sorted(m._ready) == [0, 1, 2, 3]
    m.run_ahead(lambda: taken[0], 8)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(q in m._ready for q in range(8)):
            time.sleep(0.01)
        assert all(q in m._ready for q in range(8))
        assert [m.request(q) for q in range(3)] == [ref.request(q) for q in range(3)] and m.n_inline == 0
        taken[0] = 20                                   # other shards took 3..19
        while time.monotonic() < deadline and not (all(q in m._ready for q in range(20, 28))
                                                    and not [q for q in m._ready if q < 20]):
            time.sleep(0.01)
        assert sorted(m._ready) == list(range(20, 28))
    finally:
        m.close()
    assert m.request(500) == ref.request(500) and m.n_inline == 1


def test_trace_arrivals_repeat_in_passes_and_stop_at_a_deadline(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"t": 0, "input_len": 4}\n{"t": 1, "input_len": 4}\n{"t": 2, "input_len": 4}\n')
    m = _maker(prompt_file=str(f))
    assert [m.arrival_s(k) for k in range(7)] == [0, 1, 2, 3, 4, 5, 6]       # a pass is 3 s: span 2 + a mean gap
    assert m.arrivals_before(4.5) == 5 and m.arrivals_before(0) == 0


def test_inexact_prompts_are_counted_when_sent_not_when_made():
    m = _maker(input_len=L(min=32, max=32))
    m.prefetch(range(50))
    assert m.n_inexact == 0 and m.n_inline == 0
    m.request(3)
    m.request(60)
    assert m.n_inline == 1
