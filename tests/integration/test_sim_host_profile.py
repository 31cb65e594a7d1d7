"""The real sim server with a host profile: streamed tokens wait for the modelled API core (engines/sim/host.py)."""
import json
import subprocess
import sys
import time
import urllib.request

from tests.integration.test_sim_server import MODEL, ROOT, start_sim, stop

SLOW = """id: slow-test-host
per_request_s: 0.0
tokenize_per_prompt_token_s: 0.0
per_token_light_s: 0.02
per_token_heavy_s: 0.02
"""


def _stream_seconds(url: str, max_tokens: int) -> tuple[float, int]:
    body = json.dumps({"model": MODEL, "prompt": [1, 2, 3, 4], "max_tokens": max_tokens, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    chunks = 0
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r:
            if line.startswith(b"data: {"):
                chunks += 1
    return time.monotonic() - t0, chunks


def test_tokens_wait_for_the_api_core(tmp_path):
    prof = tmp_path / "slow.yaml"
    prof.write_text(SLOW)
    for profile, lo, hi in ((str(prof), 0.39, 5.0), ("none", 0.0, 0.3)):
        proc, url, out = start_sim(tmp_path, "--gpu", "H100-SXM-80GB", "--model", MODEL, "--host-profile", profile)
        try:
            assert url, out
            assert ("slow-test-host" if profile != "none" else "host profile: none") in out
            secs, chunks = _stream_seconds(url, 20)   # 20 tokens x 20 ms of API core each
            assert chunks >= 1
            assert lo <= secs <= hi, (profile, secs)
        finally:
            stop(proc)


def test_unknown_host_profile_exits_2():
    r = subprocess.run([sys.executable, "-m", "engines.sim", "--gpu", "H100-SXM-80GB", "--model", MODEL, "--port", "0",
                        "--host-profile", "no-such-host"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no-such-host" in r.stderr


TOKENIZER_BOUND = """id: slow-tokenizer-host
per_request_s: 0.0
tokenize_per_prompt_token_s: 0.01
per_token_light_s: 0.001
per_token_heavy_s: 0.001
"""


def _first_and_last(url: str, prompt, max_tokens: int, out: dict, key: str) -> None:
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    t0, first = time.monotonic(), None
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r:
            if line.startswith(b"data: {") and first is None:
                first = time.monotonic() - t0
    out[key] = (first, time.monotonic() - t0)


def test_a_text_prompts_tokenization_delays_only_its_own_request(tmp_path):
    """A text prompt is tokenized off the API core (vLLM's tokenizer thread pool): its own first token waits for
    it, a token-id stream running beside it does not."""
    import threading

    prof = tmp_path / "tok.yaml"
    prof.write_text(TOKENIZER_BOUND)
    proc, url, out = start_sim(tmp_path, "--gpu", "H100-SXM-80GB", "--model", MODEL, "--host-profile", str(prof))
    try:
        assert url, out
        got: dict = {}
        text = threading.Thread(target=_first_and_last, args=(url, " ".join(["word"] * 120), 4, got, "text"))
        text.start()                                   # ~120 prompt tokens x 10 ms = ~1.2 s in the tokenizer
        time.sleep(0.05)
        _first_and_last(url, [1, 2, 3, 4], 40, got, "ids")
        text.join(30)
        assert got["text"][0] >= 0.8, got              # its own tokenization, before its first token
        assert got["ids"][1] < 0.6, got                # the id stream finished while the text one was tokenized
    finally:
        stop(proc)
