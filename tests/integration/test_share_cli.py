"""Sharing runs through the CLI with a real sim sweep: export -> import into a fresh history keeps the run document
identical (ids aside) and a second import is recognized; a broken bundle is refused by name; `report` writes one
offline HTML file that escapes a hostile run name and labels the simulated run."""
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

from bench.report import run_document

ROOT = Path(__file__).resolve().parents[2]
SIM = ["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B"]
HOSTILE = '<script>alert("x")</script> & [md](javascript:1)'


def melt(*args: str, db: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--db", str(db), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _sweep(db: Path) -> int:
    r = melt("sweep", *SIM, "--levels", "2,4", "--input-len", "32", "--output-len", "8", "--requests", "12",
             "--telemetry-hz", "10", "--name", HOSTILE, "--tag", "<b>t</b>", "--json", db=db)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["run_id"]


def test_export_import_report_round_trip(tmp_path):
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    rid = _sweep(src)
    bundle = tmp_path / "run.melt.json.gz"
    r = melt("export", str(rid), "-o", str(bundle), db=src)
    assert r.returncode == 0, r.stderr
    doc = json.loads(gzip.decompress(bundle.read_bytes()))
    rb = doc["runs"][0]
    assert doc["format"] == "melt-bundle" and doc["version"] == 1
    assert rb["requests"] and rb["telemetry"] and rb["engine_metrics"] and rb["events"] and rb["instances"]

    r = melt("import", str(bundle), db=dst)
    assert r.returncode == 0, r.stderr
    new_id = int(re.search(r"imported as run\(s\) #(\d+)", r.stdout).group(1))
    a, b = run_document(rid, src), run_document(new_id, dst)
    a.pop("run_id"), b.pop("run_id")
    assert a == b and a["name"] == HOSTILE and a["simulated"] is True and len(a["levels"]) == 2
    r = melt("import", str(bundle), db=dst)
    assert r.returncode == 0 and f"already in this history as run(s) #{new_id}" in r.stdout
    assert "imported as" not in r.stdout

    junk = tmp_path / "junk.melt.json.gz"
    junk.write_bytes(bundle.read_bytes()[:200])
    r = melt("import", str(junk), db=dst)
    assert r.returncode == 2 and "truncated" in r.stderr and "nothing was imported" in r.stderr
    assert "Traceback" not in r.stderr

    out = tmp_path / "report.html"
    r = melt("report", str(new_id), "-o", str(out), db=dst)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert "SIMULATED" in page and "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<b>t</b>" not in page and "&lt;b&gt;t&lt;/b&gt;" in page
    assert re.findall(r"<script[^>]*\bsrc=", page) == []          # nothing loaded from anywhere
    assert page.count("<script>") == 2 and "Plotly.newPlot" in page
    assert re.search(r"GPU health</h3><p><b>(PASS|WARN|FAIL)</b> \(simulated GPU\)", page)  # the sim's verdict
    assert melt("report", "999", "-o", str(out), db=dst).returncode == 2
