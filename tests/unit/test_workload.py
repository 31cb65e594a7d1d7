"""bench.workload: deterministic token ids and lengths, safe id range, length distributions."""
from __future__ import annotations

import pytest

from bench.config import LengthRange
from bench.workload import ID_HI, ID_LO, id_range, make_prompts, output_len_for, request_shape

L = LengthRange


def test_deterministic_and_seed_dependent():
    a = make_prompts(20, L(min=16, max=16), seed=3)
    assert a == make_prompts(20, L(min=16, max=16), seed=3)
    assert a != make_prompts(20, L(min=16, max=16), seed=4)
    assert len({tuple(p) for p in a}) == 20          # every request distinct: no prefix-cache hits
    assert make_prompts(5, L(min=16, max=16), seed=3) == a[:5]   # request i's prompt does not depend on n


def test_lengths_fixed_and_ranged():
    assert all(len(p) == 37 for p in make_prompts(50, L(min=37, max=37), seed=0))
    lens = [len(p) for p in make_prompts(400, L(min=10, max=14), seed=0)]
    assert min(lens) == 10 and max(lens) == 14 and set(lens) == set(range(10, 15))
    outs = [output_len_for(q, L(min=8, max=8), L(min=1, max=3), seed=0) for q in range(300)]
    assert set(outs) == {1, 2, 3}


def test_ids_in_safe_range():
    ids = [i for p in make_prompts(50, L(min=64, max=64), seed=1) for i in p]
    assert min(ids) >= ID_LO and max(ids) < ID_HI
    small = [i for p in make_prompts(50, L(min=64, max=64), seed=1, vocab_size=5000) for i in p]
    assert min(small) >= 1000 and max(small) < 5000
    assert id_range(None) == (1000, 30000) and id_range(50_000) == (1000, 30000)
    lo, hi = id_range(512)                           # tiny test vocabularies still work
    assert 1 <= lo < hi == 512
    with pytest.raises(ValueError):
        id_range(1)


def test_request_shape_matches_make_prompts_and_ignores_output_range():
    prompts = make_prompts(10, L(min=5, max=9), seed=11)
    for q in range(10):
        ids, n_out = request_shape(q, L(min=5, max=9), L(min=100, max=200), seed=11)
        assert ids.tolist() == prompts[q]
        assert 100 <= n_out <= 200
        assert n_out == output_len_for(q, L(min=5, max=9), L(min=100, max=200), seed=11)


def test_length_distributions_parse_and_sample():
    assert L.parse("512").kind == "fixed" and L.parse("128:1024").kind == "uniform"
    n = L.parse("normal:512,64")
    assert (n.kind, n.mean, n.spread, n.min) == ("normal", 512, 64, 1)
    assert n.max == 710                                   # ceil(512 + 64 * z_0.999)
    outs = [output_len_for(q, L(min=8, max=8), n, seed=0) for q in range(4000)]
    mean = sum(outs) / len(outs)
    sd = (sum((x - mean) ** 2 for x in outs) / len(outs)) ** 0.5
    assert abs(mean - 512) < 5 and abs(sd - 64) < 4 and max(outs) <= 710
    ln = L.parse("lognormal:200,0.5,10,5000")
    outs = sorted(output_len_for(q, L(min=8, max=8), ln, seed=1) for q in range(4000))
    assert abs(sum(outs) / len(outs) - 200) < 8          # MEAN is the distribution's mean, not its median
    assert outs[len(outs) // 2] < 200 and min(outs) >= 10 and max(outs) <= 5000
    chat_in, chat_out = L.parse("lognormal", "input"), L.parse("lognormal", "output")
    assert (chat_in.mean, chat_out.mean, chat_in.spread) == (69.5, 214.5, 1.0)
    assert str(L.parse(str(ln))) == str(ln)               # round-trips through its text form (Launch page)
    for bad in ("normal", "normal:512", "normal:x,1", "lognormal:0,1", "12:3", "0", "gamma:1,2"):
        with pytest.raises(ValueError):
            L.parse(bad)


def test_distribution_does_not_shift_the_ids():
    """Lengths consume exactly two draws whatever their distribution, so ids depend on (seed, seq) only."""
    a, _ = request_shape(3, L(min=64, max=64), L(min=8, max=8), seed=5)
    b, _ = request_shape(3, L(min=64, max=64), L.parse("lognormal:100,1"), seed=5)
    assert a.tolist() == b.tolist()
