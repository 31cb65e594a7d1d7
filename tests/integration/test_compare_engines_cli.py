"""`python -m bench compare-engines`: the engine comparison table from a real SQLite history, as markdown and CSV,
with the numbers the stored levels give (worked out here from the rows, not from the report code)."""
import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from storage import queries as q
from tests.app.seed import seed_run

ROOT = Path(__file__).resolve().parents[2]


def melt(*args: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--db", str(db), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_compare_engines_md_and_csv(tmp_path):
    db = tmp_path / "h.db"
    a = seed_run(db, name="bf16", engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", gpu="H200-141GB",
                 seed=1, price=3.6)
    b = seed_run(db, name="fp8", engine="vllm", model="meta-llama/Llama-3.1-8B-Instruct", gpu="H200-141GB",
                 seed=2, speed=1.5, price=3.6)
    r = melt("compare-engines", str(a), str(b), "--format", "csv", db=db)
    assert r.returncode == 0, r.stderr
    rows = {int(x["run"]): x for x in csv.DictReader(io.StringIO(r.stdout))}
    for rid in (a, b):
        peak = max((lv for lv in q.get_run(rid, db).levels if lv.status == "completed"),
                   key=lambda lv: lv.output_tok_s)
        row = rows[rid]
        assert int(row["concurrency"]) == peak.concurrency
        assert float(row["output_tok_s"]) == pytest.approx(peak.output_tok_s)
        assert float(row["usd_per_1k_tokens"]) == pytest.approx(0.001 / peak.output_tok_s * 1000)
        assert float(row["usd_per_day_10M"]) == pytest.approx(1e7 / peak.output_tok_s * 0.001)
    out = tmp_path / "cmp.md"
    r = melt("compare-engines", str(a), str(b), "--format", "md", "--at", "4", "-o", str(out), db=db)
    assert r.returncode == 0, r.stderr
    md = out.read_text()
    assert md.startswith("### Engine comparison: Llama-3.1-8B-Instruct on H200")
    assert "every run at concurrency 4" in md and "**Best pick:" in md and "fp8" in md
    r = melt("compare-engines", str(a), "999", db=db)
    assert r.returncode == 2 and "#999" in r.stderr
