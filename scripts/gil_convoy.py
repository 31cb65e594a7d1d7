"""The GIL convoy (issue #13, text prompts at high concurrency): vLLM 0.25.1's API server tokenizes a text prompt in a
one-worker thread pool (vllm/renderers/base.py, renderer_num_workers 1) through transformers 5's fast tokenizer,
whose single-text call is `Tokenizer.encode_batch([text])` (tokenization_utils_tokenizers.py): the Rust part runs
without the GIL, the Python around it needs it. This is a narrower stand-in, with no GPU and no vLLM: a one-worker
pool calling the raw `tokenizers` `encode_batch` on Melt's dummy BPE (512-token prompts) and putting the ids into a
list (transformers' own Python layer, more GIL-held work, is not in it), beside an asyncio loop doing Python work in
slices of W us, each followed by a socket send (a syscall that drops the GIL, as an SSE chunk's write does). It prints
the wall time per tokenization and the loop's busy share (slice wall time over the run, so it includes the loop's
own waits for the GIL). The first lines check the premise: a Python loop's speed beside a thread calling `encode`
and one calling `encode_batch`. No control separates GIL waits from the two threads sharing cores (this machine
has two).

    python scripts/gil_convoy.py        (~20 s; docs/PERFORMANCE.md "Text prompts at 512 and 1,024 users")
"""
import asyncio
import random
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engines.sim.calibrate_host import load_tokenizer, resolve_tokenizer  # noqa: E402

tok, lo, hi = load_tokenizer(resolve_tokenizer(None, "Qwen/Qwen3-0.6B")[0])
rng = random.Random(0)
prompts = [tok.decode([rng.randrange(lo, hi) for _ in range(512)]) for _ in range(64)]


def job(p):
    enc = tok.encode_batch([p])[0]
    return {"input_ids": list(enc.ids)}


async def main(slice_us, duty, n):
    loop = asyncio.get_running_loop(); ex = ThreadPoolExecutor(1)
    a, b = socket.socketpair(); a.setblocking(False); b.setblocking(False)
    stop = False; work = [0.0]
    async def busy():
        while not stop:
            t0 = time.perf_counter(); t = t0 + slice_us / 1e6
            while time.perf_counter() < t:
                pass
            try:
                a.send(b"x" * 200)
            except BlockingIOError:
                pass
            try:
                while b.recv(65536):
                    pass
            except BlockingIOError:
                pass
            work[0] += time.perf_counter() - t0
            if duty < 1:
                await asyncio.sleep(slice_us / 1e6 * (1 - duty) / duty)
            else:
                await asyncio.sleep(0)
    bt = asyncio.create_task(busy()) if slice_us else None
    t0 = time.perf_counter()
    await asyncio.gather(*(loop.run_in_executor(ex, job, prompts[i % 64]) for i in range(n)))
    dt = time.perf_counter() - t0; stop = True
    if bt: await bt
    ex.shutdown()
    return dt, work[0] / dt


def spin(sec):
    n, t = 0, time.perf_counter() + sec
    while time.perf_counter() < t:
        n += 1
    return n


def beside(call) -> float:
    """A pure-Python loop's speed while another thread calls `call` back to back, against the loop alone."""
    base, stop = spin(1.0), [False]

    def work():
        i = 0
        while not stop[0]:
            call(prompts[i % len(prompts)])
            i += 1
    th = threading.Thread(target=work)
    th.start()
    time.sleep(0.1)
    got = spin(1.0)
    stop[0] = True
    th.join()
    return got / base


for name, call in (("encode", tok.encode), ("encode_batch", lambda p: tok.encode_batch([p]))):
    print(f"a Python loop beside a thread calling {name}: {beside(call):.0%} of its speed alone", flush=True)
CASES = ((0, 1, 256), (50, 0.5, 128), (50, 0.8, 64), (50, 0.95, 32), (50, 1, 16), (500, 0.8, 32), (500, 1, 16))
for slice_us, duty, n in CASES:       # (the loop's slice in us, the busy share asked, jobs); slice 0: no loop work
    dt, busy = asyncio.run(main(slice_us, duty, n))
    what = f"loop slices {slice_us:4} us (asked {duty:4.0%} busy)" if slice_us else "loop idle" + " " * 27
    print(f"{what}, measured busy {busy:4.0%} of the wall: {dt / n * 1e3:6.2f} ms per tokenization ({n} jobs)",
          flush=True)
