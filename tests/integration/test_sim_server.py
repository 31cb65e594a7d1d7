"""The sim engine as a real server: `python -m engines.sim` on a loopback port, driven by the official openai client
and plain HTTP. Every process started here is stopped by PID in a finalizer."""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "Qwen/Qwen3-0.6B"
TELEMETRY_KEYS = ["gpu_index", "gpu_uuid", "util_gpu", "util_mem", "mem_used_mb", "mem_total_mb", "power_w",
                  "power_avg_w", "energy_j", "temp_gpu_c", "temp_mem_c", "sm_clock_mhz", "mem_clock_mhz",
                  "throttle_reasons", "pstate"]


def start_sim(tmp_path: Path, *args: str, port: int = 0) -> tuple[subprocess.Popen, str | None, str]:
    """Start the simulator; return (process, base URL or None if it exited, stdout so far)."""
    err = open(tmp_path / f"sim-{time.monotonic_ns()}.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "engines.sim", "--port", str(port), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=err, text=True)
    err.close()
    out = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            out += line
            m = re.search(r"melt-sim ready: .* at (http://\S+) ", line)
            if m:
                return proc, m.group(1), out
            if not line and proc.poll() is not None:
                break
        elif proc.poll() is not None:
            break
    return proc, None, out


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc.stdout:
        proc.stdout.close()
    return proc.returncode


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    proc, url, out = start_sim(tmp_path_factory.mktemp("sim"), "--gpu", "H100-SXM-80GB", "--model", MODEL)
    try:
        assert url, f"sim did not start: {out}"
        yield url
    finally:
        stop(proc)


@pytest.fixture
def client(sim):
    return openai.OpenAI(base_url=sim + "/v1", api_key="unused", max_retries=0, timeout=30)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def http(method: str, url: str, body=None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"bad exposition line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples, name: str, **labels) -> float:
    want = set(labels.items())
    vals = [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]
    assert vals, f"{name}{labels} missing"
    return sum(vals)


def scrape(sim) -> dict:
    status, body = http("GET", sim + "/metrics")
    assert status == 200
    return parse_prometheus(body.decode())


def test_health_models_version(sim):
    assert http("GET", sim + "/health")[0] == 200
    status, body = http("GET", sim + "/v1/models")
    card = json.loads(body)["data"][0]
    assert status == 200 and card["id"] == MODEL and card["root"] == MODEL and card["simulated"] is True
    version = json.loads(http("GET", sim + "/version")[1])
    assert version["simulated"] is True and version["version"].startswith("melt-sim")


def test_streaming_completion_with_token_ids_counts_usage(client):
    ids = list(range(100, 612))  # 512 token ids
    chunks = list(client.completions.create(model=MODEL, prompt=ids, max_tokens=9, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True, "min_tokens": 9}))
    text_chunks = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].text for c in text_chunks)
    assert 1 <= len(text_chunks) <= 9 and all(c.choices[0].text for c in text_chunks)
    assert len(text.split()) == 9
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    usage = chunks[-1].usage
    assert not chunks[-1].choices
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (512, 9, 521)


def test_non_streaming_completion_and_batch_prompt(client):
    r = client.completions.create(model=MODEL, prompt="one two three four", max_tokens=5)
    assert len(r.choices[0].text.split()) == 5 and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 5)
    r = client.completions.create(model=MODEL, prompt=["a b", "c d e"], max_tokens=3)
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 6)


def test_streaming_batch_prompt_indexes(client):
    chunks = list(client.completions.create(model=MODEL, prompt=[[1, 2, 3], [4, 5]], max_tokens=4, stream=True,
                                            stream_options={"include_usage": True}))
    by_index: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            by_index[ch.index] = by_index.get(ch.index, "") + ch.text
    assert {i: len(t.split()) for i, t in by_index.items()} == {0: 4, 1: 4}
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 8)


def test_chat_streaming_and_not(client):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there sim"}]
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    content = "".join(d.content or "" for d in deltas)
    assert len(content.split()) == 6
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "length"
    # 5 words + 4 per message (2 messages) + 3 for the generation prompt
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5 + 8 + 3, 6)
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4)
    assert r.choices[0].message.role == "assistant" and len(r.choices[0].message.content.split()) == 4
    assert r.usage.completion_tokens == 4


def test_errors_are_openai_shaped(client, sim):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=MODEL, prompt=[1] * 40000, max_tokens=2000)
    with pytest.raises(openai.BadRequestError, match="min_tokens"):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2, extra_body={"min_tokens": 5})
    for body in (b"{not json", {"model": MODEL, "prompt": []}, {"model": MODEL, "prompt": "x", "max_tokens": "3"},
                 {"model": MODEL, "prompt": "x", "stream_options": {"include_usage": True}},
                 {"model": MODEL, "prompt": [1, -5]}):
        status, raw = http("POST", sim + "/v1/completions", body)
        err = json.loads(raw)["error"]
        assert status == 400 and err["code"] == 400 and err["message"], body
    status, raw = http("POST", sim + "/v1/chat/completions", {"model": MODEL, "messages": []})
    assert status == 400


def test_metrics_counters_move(client, sim):
    before = scrape(sim)
    client.completions.create(model=MODEL, prompt=list(range(64)), max_tokens=7)
    after = scrape(sim)
    lbl = {"model_name": MODEL}
    assert metric(after, "vllm:generation_tokens_total", **lbl) - metric(before, "vllm:generation_tokens_total",
                                                                         **lbl) == 7
    assert metric(after, "vllm:prompt_tokens_total", **lbl) - metric(before, "vllm:prompt_tokens_total", **lbl) == 64
    assert (metric(after, "vllm:request_success_total", finished_reason="length", **lbl)
            - metric(before, "vllm:request_success_total", finished_reason="length", **lbl)) == 1
    for h, n in (("vllm:time_to_first_token_seconds", 1), ("vllm:e2e_request_latency_seconds", 1),
                 ("vllm:inter_token_latency_seconds", 6)):
        assert metric(after, h + "_count", **lbl) - metric(before, h + "_count", **lbl) == n
        assert metric(after, h + "_bucket", le="+Inf", **lbl) == metric(after, h + "_count", **lbl)
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                  "vllm:num_preemptions_total", "melt:sim_lag_seconds"):
        assert metric(after, gauge) >= 0
    assert metric(after, "melt:sim_simulated") == 1
    assert metric(after, "melt:sim_stream_tokens_total") >= metric(after, "melt:sim_stream_chunks_total")


def test_sim_telemetry(client, sim):
    first = json.loads(http("GET", sim + "/sim/telemetry")[1])
    client.completions.create(model=MODEL, prompt=list(range(2048)), max_tokens=20)
    second = json.loads(http("GET", sim + "/sim/telemetry")[1])
    assert first["simulated"] is True and len(first["gpus"]) == 1
    g1, g2 = first["gpus"][0], second["gpus"][0]
    assert list(g1) == TELEMETRY_KEYS
    assert g1["gpu_uuid"] == g2["gpu_uuid"] and g1["gpu_index"] == 0
    assert g2["energy_j"] > g1["energy_j"] > 0
    assert 0 < g2["mem_used_mb"] <= g2["mem_total_mb"]


def test_client_disconnect_aborts_request(sim):
    before = scrape(sim)
    body = json.dumps({"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 5000, "stream": True}).encode()
    with socket.create_connection(socket.getaddrinfo(*re.match(r"http://(.*):(\d+)", sim).groups(),
                                                     type=socket.SOCK_STREAM)[0][4], timeout=10) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        got = b""
        while b"data: " not in got:  # headers and the first token may come in separate packets
            part = s.recv(4096)
            assert part, got
            got += part
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = scrape(sim)
        aborted = (metric(m, "vllm:request_success_total", finished_reason="abort")
                   - metric(before, "vllm:request_success_total", finished_reason="abort"))
        if aborted == 1 and metric(m, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert aborted == 1
    assert metric(m, "vllm:kv_cache_usage_perc") == 0


def test_cli_errors_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "engines.sim", "--gpu", "H100-SXM", "--model", MODEL, "--port", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "H100-SXM-80GB" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engines.sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.5B",
                        "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Qwen/Qwen3-0.6B" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "engines.sim", "--gpu", "H100-SXM-80GB", "--model", MODEL,
                            "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "in use" in r.stderr


def test_sigterm_exits_cleanly(tmp_path):
    proc, url, out = start_sim(tmp_path, "--gpu", "L40S", "--model", "Qwen/Qwen3-8B", "--served-model-name", "q8")
    try:
        assert url, out
        assert json.loads(http("GET", url + "/v1/models")[1])["data"][0]["id"] == "q8"
    finally:
        code = stop(proc)
    assert code == 0
