"""The simulator's word tokenizer and generated text."""
import random

from engines.sim import tokens as tok


def test_generated_text_is_one_word_per_token():
    rng = random.Random(3)
    for _ in range(500):
        start, n = rng.randrange(0, 1000), rng.randrange(0, 5000)
        text = tok.text(start, n)
        assert tok.count_text(text) == n
        assert text == "".join(tok.WORDS[(start + i) % len(tok.WORDS)] for i in range(n))
    assert all(w.strip() for w in tok.WORDS)
    # streaming pieces concatenate to the whole
    assert tok.text(0, 3) + tok.text(3, 40) + tok.text(43, 100) == tok.text(0, 143)


def test_count_text():
    assert tok.count_text("hello  world\n again") == 3
    assert tok.count_text("   ") == 0
    ids = tok.word_ids("a b a", 1000)
    assert len(ids) == 3 and ids[0] == ids[2] and all(0 <= i < 1000 for i in ids)
