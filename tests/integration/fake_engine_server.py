"""A tiny stand-in for an engine server, used by the supervisor tests (stdlib only, run as a script).

It behaves like a real engine where the supervisor cares: logs startup phases, answers /health and
/v1/completions only after a "load" delay, and can misbehave on request:
  --exit-during-load CODE   log a fake error and exit with CODE before serving
  --never-ready             /health answers 503 forever
  --reject-completions      /v1/completions answers 404 (wrong model name)
  --ids-only                text prompts get 400, token-id prompts work (an engine without a tokenizer)
  --ignore-sigterm          the server itself ignores SIGTERM
  --child-ignores-sigterm   spawn a child (same group) that ignores SIGTERM
  --escape-pgid             spawn a grandchild that moves into its own process group (same session)
  --escape-session          spawn a grandchild that calls setsid() (new session + group), via a middle
                            process that exits at once, so it is re-parented away from us too
  --pidfile PATH            append "role pid" lines for every process it creates
  --gpu-mb N                hold N MiB of GPU memory (torch + CUDA), like an engine's KV cache
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def record(pidfile: str | None, role: str, pid: int) -> None:
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{role} {pid}\n")


SLEEPER = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)\n"
ESCAPE_PGID = "import os, time\nos.setpgid(0, 0)\nwhile True: time.sleep(1)\n"
# The middle process starts the grandchild in a new session, records it, and exits: the grandchild is then
# re-parented to init (or a subreaper), in another session and group. Only the env tag still ties it to us.
ESCAPE_SESSION_MIDDLE = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)'],"
    " start_new_session=True)\n"
    "print('escaped', p.pid, flush=True)\n"
    "open(sys.argv[1], 'a').write(f'escape-session {p.pid}\\n') if sys.argv[1] else None\n"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--load-s", type=float, default=0.5)
    ap.add_argument("--model", default="fake-model")
    ap.add_argument("--exit-during-load", type=int, default=None)
    ap.add_argument("--never-ready", action="store_true")
    ap.add_argument("--reject-completions", action="store_true")
    ap.add_argument("--ids-only", action="store_true")
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("--child-ignores-sigterm", action="store_true")
    ap.add_argument("--escape-pgid", action="store_true")
    ap.add_argument("--escape-session", action="store_true")
    ap.add_argument("--pidfile", default=None)
    ap.add_argument("--gpu-mb", type=int, default=0)
    args = ap.parse_args()

    record(args.pidfile, "server", os.getpid())
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.child_ignores_sigterm:
        c = subprocess.Popen([sys.executable, "-c", SLEEPER])
        record(args.pidfile, "child", c.pid)
    if args.escape_pgid:
        c = subprocess.Popen([sys.executable, "-c", ESCAPE_PGID])
        record(args.pidfile, "escape-pgid", c.pid)
    if args.escape_session:
        subprocess.run([sys.executable, "-c", ESCAPE_SESSION_MIDDLE, args.pidfile or ""], check=True)

    if args.gpu_mb:
        import torch  # only on the GPU test path

        held = torch.empty(args.gpu_mb << 20, dtype=torch.uint8, device="cuda")  # noqa: F841 (kept alive)
        torch.cuda.synchronize()
        print(f"INFO holding {args.gpu_mb} MiB on {torch.cuda.get_device_name()}", flush=True)
    print("INFO starting fake engine", flush=True)
    print("INFO Loading weights took 0.01 seconds", flush=True)
    if args.exit_during_load is not None:
        print("ERROR boom: CUDA out of memory while allocating KV cache", flush=True)
        sys.exit(args.exit_during_load)
    ready_at = time.monotonic() + args.load_s

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):  # keep the log small
            pass

        def _json(self, code: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                ok = not args.never_ready and time.monotonic() >= ready_at
                self._json(200 if ok else 503, {})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
            if self.path != "/v1/completions" or args.reject_completions or req.get("model") != args.model:
                self._json(404, {"error": f"model {req.get('model')!r} does not exist"})
                return
            if args.ids_only and isinstance(req.get("prompt"), str):
                self._json(400, {"error": "tokenizer not initialized: send token ids"})
                return
            self._json(200, {"choices": [{"text": "x", "index": 0}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"INFO Capturing CUDA graphs (fake)\nINFO Application startup complete on port {args.port}",
          flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
