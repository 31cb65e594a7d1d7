"""bench.compare: run labels from what differs between the runs shown, and the one-line verdict."""
from types import SimpleNamespace

from bench.compare import RunFigures, picker_labels, run_labels, short_gpu, short_model, verdict


def run(rid, gpu="H100-SXM-80GB", engine="vllm", model="Qwen/Qwen3-0.6B", name="", simulated=False, gpu_count=1,
        config=None, active=False):
    return SimpleNamespace(id=rid, gpu=gpu, engine_kind=engine, model=model, name=name, simulated=simulated,
                           gpu_count=gpu_count, config=config or {}, active=active)


def test_short_names():
    assert short_gpu("H100-SXM-80GB") == "H100-SXM"
    assert short_gpu("H200-141GB") == "H200"
    assert short_gpu("L40S") == "L40S"
    assert short_gpu("A100-80GB", 8) == "8× A100"
    assert short_gpu(None) == "GPU ?"
    assert short_model("Qwen/Qwen3-0.6B") == "Qwen3-0.6B"
    assert short_model("local-model") == "local-model"


def test_one_run_gets_every_part():
    assert run_labels([run(1, gpu="H200-141GB")]) == {1: "H200 · vLLM · Qwen3-0.6B"}


def test_only_what_differs_besides_the_gpu():
    labels = run_labels([run(1, gpu="H200-141GB", simulated=True, engine="sim"),
                         run(2, gpu="H100-SXM-80GB", simulated=True, engine="sim")])
    assert labels == {1: "H200 (SIMULATED)", 2: "H100-SXM (SIMULATED)"}
    labels = run_labels([run(1), run(2, engine="sglang"), run(3, model="meta-llama/Llama-3.1-8B")])
    assert labels == {1: "H100-SXM · vLLM · Qwen3-0.6B", 2: "H100-SXM · SGLang · Qwen3-0.6B",
                      3: "H100-SXM · vLLM · Llama-3.1-8B"}


def test_identical_setups_fall_back_to_name_then_id():
    labels = run_labels([run(1, name="before patch"), run(2, name="after patch"), run(3), run(4)])
    assert labels[1] == "H100-SXM · before patch" and labels[2] == "H100-SXM · after patch"
    assert labels[3] == "H100-SXM · #3" and labels[4] == "H100-SXM · #4"
    assert len(set(labels.values())) == 4


def test_token_id_prompts_are_labelled_when_they_differ():
    text = run(1, config={"workload": {"prompt_format": "text"}})
    ids = run(2, config={"workload": {"prompt_format": "token-ids"}})
    labels = run_labels([text, ids])
    assert labels == {1: "H100-SXM", 2: "H100-SXM · token-id prompts"}
    assert run_labels([ids]) == {2: "H100-SXM · vLLM · Qwen3-0.6B · token-id prompts"}


def test_picker_labels_carry_id_name_and_marks():
    labels = picker_labels([run(7, name="nightly", simulated=True, active=True), run(8, gpu="H200-141GB")],
                           live_mark=True)
    assert labels[7] == "#7 · H100-SXM · nightly (SIMULATED)  ● live"
    assert labels[8] == "#8 · H200"
    same = picker_labels([run(3), run(4)])
    assert same == {3: "#3 · H100-SXM", 4: "#4 · H100-SXM"}       # no "#3 · ... · #3"


def test_verdict_fastest_against_runner_up():
    v = verdict([RunFigures("H100-SXM", 1000.0, 0.80), RunFigures("H200", 1140.0, 0.88)])
    assert v == "H200: +14% peak tok/s, +10% $ per 1M tokens vs H100-SXM"
    v = verdict([RunFigures("A", 500.0, 2.0), RunFigures("B", 400.0, None)])
    assert v == "A: +25% peak tok/s vs B"


def test_verdict_names_a_cheaper_third_run():
    v = verdict([RunFigures("H200", 1200.0, 1.0), RunFigures("H100", 1000.0, 0.9), RunFigures("L40S", 300.0, 0.5)])
    assert v.startswith("H200: +20% peak tok/s, +11% $ per 1M tokens vs H100")
    assert v.endswith("cheapest per token: L40S ($0.500 per 1M)")


def test_verdict_needs_two_measured_runs():
    assert verdict([RunFigures("A", 100.0)]) is None
    assert verdict([RunFigures("A", 100.0), RunFigures("B", None)]) is None


def test_with_cost_and_figures():
    from bench.compare import figures, with_cost

    rows = [{"concurrency": 1, "status": "completed", "output_tok_s": 100.0},
            {"concurrency": 8, "status": "completed", "output_tok_s": 720.0},
            {"concurrency": 64, "status": "cancelled", "output_tok_s": 900.0},   # not a finished measurement
            {"concurrency": 128, "status": "running", "output_tok_s": None}]
    priced = with_cost(rows, 2, 3.6)             # 2 GPUs at $3.60/h = $0.002/s
    assert priced[0]["usd_per_m_output"] == 20.0 # $0.002 / 100 tok/s * 1e6
    assert priced[3]["usd_per_m_output"] is None
    assert with_cost(rows, 1, None)[1]["usd_per_m_output"] is None
    f = figures("H200", priced)
    assert (f.label, f.peak_tok_s) == ("H200", 720.0) and abs(f.usd_per_m - 2e-3 / 720 * 1e6) < 1e-9
    assert figures("x", rows[2:]).peak_tok_s is None


def test_partner_for_prefers_the_same_model():
    from bench.compare import partner_for

    runs = [run(5, model="other", active=True), run(4, model="other"), run(3), run(2), run(1)]  # newest first
    assert partner_for(runs, 2) == 3            # newest finished run of the same model
    assert partner_for(runs, 4) == 3            # no other finished "other": the newest finished run
    assert partner_for(runs, 99) is None and partner_for([run(1)], 1) is None


def test_cost_line():
    from bench.compare import cost_line
    from bench.cost import LevelCost

    h100 = LevelCost(64, 1000.0, 0.40, True, [])
    h200 = LevelCost(128, 1500.0, 0.44, True, [])
    assert cost_line({"H200": h200, "H100": h100}) == \
        "Cheapest per token meeting the SLOs: H100 at C=64, $0.400 per 1M (H200 +10%)"
    assert cost_line({"H100": h100, "L40S": None}).endswith("; no level meets them: L40S")
    assert cost_line({"A": None}) is None
