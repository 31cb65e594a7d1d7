"""python -m engines.sim --gpu H100-SXM-80GB --model Qwen/Qwen3-0.6B [--port 8000] [--host 127.0.0.1] ...

Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad command line, an unknown GPU/model (the message names close
matches), a model that does not fit, or a port that cannot be bound.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import resource
import signal
import socket
import sys

from catalog import CatalogError, get_gpu, get_model
from catalog.quant import QUANT_BYTES
from engines.sim.host import load_host_profile
from engines.sim.model import PerfModel, SimKnobs

EXIT_USAGE = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m engines.sim",
                                description="Melt's simulated LLM engine (OpenAI-compatible, SIMULATED results).")
    p.add_argument("--gpu", required=True, help="catalog GPU id to emulate, e.g. H100-SXM-80GB")
    p.add_argument("--model", required=True, help="catalog model id, e.g. Qwen/Qwen3-0.6B")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="name clients use in 'model' (default: --model)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="default 1024 on >=70 GB GPUs, else 256")
    p.add_argument("--mem-fraction", "--gpu-memory-utilization", dest="mem_fraction", type=float, default=0.9)
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--dtype", default="bfloat16", help="weight dtype: bfloat16 | float16 | fp8")
    p.add_argument("--quantization", default=None, help="fp8 = fp8 weights and fp8 tensor-core compute; weight-only "
                   "schemes (gguf_q4_0, gguf_q8_0, awq, gptq, ...) = small weights, bf16 compute")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto | fp8")
    p.add_argument("--tensor-parallel-size", "--tp", dest="tp", type=int, default=1,
                   help="GPUs the model is sharded over (modelled: engines/sim/model.py)")
    p.add_argument("--kv-cache-tokens", type=int, default=None,
                   help="KV capacity in tokens, as Melt's planner sized it (default: sized by the simulator)")
    p.add_argument("--gpu-share", type=float, default=1.0,
                   help="share of the GPU's bandwidth and FLOPs this instance gets (co-located sim instances: 1/k)")
    p.add_argument("--gpu-indices", default=None,
                   help="box positions of the simulated GPUs, for telemetry (default 0..tp-1), e.g. 4,5,6,7")
    p.add_argument("--keepalive-timeout", type=float, default=75.0,
                   help="seconds an idle keep-alive connection stays open (vLLM's uvicorn default is 5)")
    p.add_argument("--host-profile", default=None,
                   help="API-server CPU costs: an id in assets/hosts/ or a YAML file (default: "
                        "typical-datacenter-core; 'none': the engine's times go straight to the clients)")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def gpu_indices(text: str | None, tp: int) -> list[int]:
    """--gpu-indices "4,5,6,7" -> [4, 5, 6, 7]; one per TP rank (default 0..tp-1)."""
    if not text:
        return list(range(tp))
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--gpu-indices: expected GPU indices like 0,1, got {text!r}") from None
    if len(out) != tp or len(set(out)) != tp or min(out) < 0:
        raise ValueError(f"--gpu-indices {text!r}: need {tp} distinct indices >= 0 (one per TP rank)")
    return out


def raise_nofile_limit() -> int:
    """Every streaming client is a socket: lift the soft open-files limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a taken port is a clear error instead of a traceback."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    # SO_REUSEADDR only lets us rebind over TIME_WAIT leftovers; a live listener still gives EADDRINUSE.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.listen(4096)  # the kernel caps it at net.core.somaxconn
    sock.setblocking(False)
    return sock


async def serve(perf: PerfModel, sock: socket.socket, served_name: str | None, keepalive_timeout: float = 75.0,
                host_profile=None, gpu_indices: list[int] | None = None) -> None:
    from aiohttp import web

    from engines.sim.server import SimServer

    server = SimServer(perf, served_name, host_profile, gpu_indices)
    # handler_cancellation: a client that disconnects cancels its handler, which aborts its request in the engine.
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True, keepalive_timeout=keepalive_timeout)
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = sock.getsockname()[:2]
    on = perf.gpu.id if perf.tp == 1 else f"{perf.tp}x {perf.gpu.id} (TP={perf.tp})"
    print(f"melt-sim ready: SIMULATED {perf.model.id} on {on} as '{server.name}' at http://{host}:{port} "
          f"(kv capacity {perf.kv_capacity_tokens} tokens, max_num_seqs {perf.max_num_seqs}, "
          f"max_num_batched_tokens {perf.max_num_batched_tokens}, max_model_len {perf.max_model_len})", flush=True)
    try:
        await stop.wait()
    finally:
        print("melt-sim: shutting down", flush=True)
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        gpu = get_gpu(a.gpu)
        model = get_model(a.model)
        quant = (a.quantization or "").lower()
        if quant and quant not in QUANT_BYTES:
            raise ValueError(f"the simulator does not know --quantization {a.quantization!r} "
                             f"(known: {', '.join(sorted(QUANT_BYTES))})")
        weight_dtype = quant or a.dtype
        knobs = SimKnobs(mem_fraction=a.mem_fraction, max_num_seqs=a.max_num_seqs,
                         max_num_batched_tokens=a.max_num_batched_tokens, max_model_len=a.max_model_len,
                         weight_dtype=weight_dtype, kv_cache_dtype=a.kv_cache_dtype, tp=a.tp,
                         kv_cache_tokens=a.kv_cache_tokens, gpu_share=a.gpu_share)
        host = None if (a.host_profile or "").lower() == "none" else load_host_profile(a.host_profile)
        perf = PerfModel(gpu, model, knobs, host=host)
        indices = gpu_indices(a.gpu_indices, perf.tp)
    except (CatalogError, ValueError) as e:  # pydantic ValidationError is a ValueError
        print(f"melt-sim: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        sock = bind_socket(a.host, a.port)
    except OSError as e:
        why = "port already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        print(f"melt-sim: error: cannot listen on {a.host}:{a.port}: {why}", file=sys.stderr)
        return EXIT_USAGE
    nofile = raise_nofile_limit()
    print(f"melt-sim {perf.describe()} (open-files limit {nofile})", flush=True)
    print(f"melt-sim host profile: {f'{host.id} ({host.derivation})' if host else 'none'}", flush=True)

    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(perf, sock, a.served_model_name, a.keepalive_timeout, host, indices))
    return 0


if __name__ == "__main__":
    sys.exit(main())
