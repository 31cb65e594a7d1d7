"""Security rules on real inputs: redirects are never followed with an API key, secrets never reach logs/DB/UI argv,
CSV downloads cannot carry spreadsheet formulas, terminal output cannot carry escape sequences, model names cannot
become engine flags."""
from __future__ import annotations

import http.server
import threading

import pandas as pd
import pytest

from engines.spec import EngineSpec, redact_argv, redact_env


class _Redirector(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_POST(self):  # noqa: N802
        _Redirector.seen.append((self.path, self.headers.get("Authorization")))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(302)
        self.send_header("Location", "/steal")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *a):  # quiet
        pass


def test_a_redirect_is_an_answer_and_the_api_key_is_never_forwarded():
    from bench.sweep import SweepAborted, probe_openai

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _Redirector.seen.clear()
        with pytest.raises(SweepAborted, match="HTTP 302"):
            probe_openai(f"http://127.0.0.1:{srv.server_address[1]}", "m", "sk-secret", timeout=10)
        assert [p for p, _ in _Redirector.seen] == ["/v1/completions"]  # /steal never requested
    finally:
        srv.shutdown()


def test_secret_flags_and_env_are_redacted():
    argv = ["vllm", "serve", "m", "--api-key", "sk-1", "--hf-token=hf_2", "--port", "8000", "--max-num-seqs", "8"]
    assert redact_argv(argv) == ["vllm", "serve", "m", "--api-key", "<redacted>", "--hf-token=<redacted>",
                                 "--port", "8000", "--max-num-seqs", "8"]
    env = {"HF_TOKEN": "x", "OPENAI_API_KEY": "y", "DB_PASS": "z", "MYSQL_PWD": "w", "CUDA_VISIBLE_DEVICES": "0"}
    assert redact_env(env) == {"HF_TOKEN": "<redacted>", "OPENAI_API_KEY": "<redacted>", "DB_PASS": "<redacted>",
                               "MYSQL_PWD": "<redacted>", "CUDA_VISIBLE_DEVICES": "0"}


def test_csv_downloads_cannot_carry_formulas():
    from app.ui.common import csv_bytes

    df = pd.DataFrame({"name": ['=HYPERLINK("http://x","open")', "+1", "@SUM(A1)", "plain", "-x"], "tok_s": [1.5, -2.0, 3, 4, 5]})
    text = csv_bytes(df).decode()
    assert "'=HYPERLINK" in text and "'+1" in text and "'@SUM" in text and "'-x" in text and "\nplain," in text
    assert ",-2.0" in text  # numbers stay numbers


def test_terminal_output_has_no_control_characters():
    from bench.report import table, terminal_safe

    evil = "run\x1b]52;c;ZXZpbA==\x07 \x9b31m"
    assert "\x1b" not in terminal_safe(evil) and "\x07" not in terminal_safe(evil) and "\x9b" not in terminal_safe(evil)
    assert terminal_safe("a\tb\nc") == "a\tb\nc"
    assert "\x1b" not in table(["name"], [[evil]])


@pytest.mark.parametrize("name", ["--trust-remote-code", "-x", " "])
def test_model_names_cannot_be_flags(name):
    with pytest.raises(ValueError, match="must not start with '-'"):
        EngineSpec(kind="trtllm", model=name)


def test_redaction_matches_words_not_substrings():
    """Performance flags whose names contain "token" stay visible (and re-runnable); secrets in flags, positional
    NAME=VALUE words and after a switch-like secret flag are handled."""
    from engines.spec import REDACTED, redact_argv

    argv = ["--max-num-batched-tokens", "8192", "--tokenizer", "/m", "--skip-tokenizer-init", "--max-model-len",
            "4096", "--api-key", "sk-1", "--hf-token=hf_2", "env", "HF_TOKEN=hf_3", "-e", "OPENAI_API_KEY=sk-4",
            "--enable-auth", "--port", "8000"]
    out = redact_argv(argv)
    assert out[:7] == argv[:7]                                    # nothing of theirs hidden
    assert out[8] == REDACTED and out[9] == f"--hf-token={REDACTED}"
    assert out[11] == f"HF_TOKEN={REDACTED}" and out[13] == f"OPENAI_API_KEY={REDACTED}"
    assert out[14:] == ["--enable-auth", "--port", "8000"]        # a secret-named switch hides no other flag
    assert not any(s in " ".join(out) for s in ("sk-1", "hf_2", "hf_3", "sk-4"))
