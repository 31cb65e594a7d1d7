"""The simulator's tokenizer (Melt's BPE) and generated text."""
import random

from engines.sim import tokens as tok


def test_generated_text_is_one_word_per_token():
    rng = random.Random(3)
    for _ in range(500):
        start, n = rng.randrange(0, 1000), rng.randrange(0, 5000)
        text = tok.text(start, n)
        assert len(text.split()) == n
        assert text == "".join(tok.WORDS[(start + i) % len(tok.WORDS)] for i in range(n))
    assert all(w.strip() for w in tok.WORDS)
    # streaming pieces concatenate to the whole
    assert tok.text(0, 3) + tok.text(3, 40) + tok.text(43, 100) == tok.text(0, 143)


def test_text_prompts_are_counted_with_the_bpe():
    t = tok.TextTokenizer(32000)
    ids = t.ids("def main():\n    return 42")
    assert t.count("def main():\n    return 42") == len(ids) > 3 and all(0 <= i < 32000 for i in ids)
    assert t.decode(ids) == "def main():\n    return 42"
