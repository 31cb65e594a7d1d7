"""Deployments of several instances: recipe -> run config (bench.deploy), refusal before launch with the planner's
reason, the client-side balancer's routing table (bench.loadgen.route_table), per-instance level figures."""
from __future__ import annotations

import pytest

from bench.cli import UsageError, build_config, make_parser
from bench.config import DeployedInstance, RunConfig
from bench.deploy import DeployRefused, deployment_from_recipe
from bench.loadgen import ROUTE_CYCLE, LevelPlan, LoadGenError, Target, route_table
from bench.metrics import per_instance
from bench.mix import BOX, breakdown
from bench.runs import stored_config
from catalog.recipes import RecipeError, load_recipe, parse_recipe
from engines.spec import EngineSpec


def _counts(table: bytes, start: int, n: int, k: int) -> list[int]:
    out = [0] * k
    for q in range(start, start + n):
        out[table[q % ROUTE_CYCLE]] += 1
    return out


@pytest.mark.parametrize("weights", [(0.7, 0.3), (3, 1, 2), (1, 1), (5, 0, 1), (0.2, 0.2, 0.2, 0.4)])
def test_route_table_keeps_every_window_within_two_of_the_weights(weights):
    table = route_table(tuple(float(w) for w in weights))
    share = [w / sum(weights) for w in weights]
    for start, n in ((0, 10), (0, 1000), (3, 17), (40, 12), (ROUTE_CYCLE - 5, 50), (12345, 999)):
        got = _counts(table, start, n, len(weights))
        bound = 1 if start == 0 else 2
        assert all(abs(g - n * s) <= bound for g, s in zip(got, share)), (start, n, got)
    if 0 in weights:  # a weight of 0 gets nothing
        assert _counts(table, 0, 1000, len(weights))[weights.index(0)] == 0


def test_equal_weights_are_round_robin_and_bad_weights_are_refused():
    assert list(route_table((1.0, 1.0, 1.0))[:9]) == [0, 1, 2] * 3
    for bad in ((0.0, 0.0), (-1.0, 2.0), ()):
        with pytest.raises(LoadGenError):
            route_table(bad)


def test_level_plan_routes_by_seq_and_a_single_target_is_the_old_path():
    one = LevelPlan(base_url="http://127.0.0.1:1", model="m", instance_id=7)
    assert [t.instance_id for t in one.routes()] == [7] and one.target_of(123) == 0
    two = LevelPlan(base_url="http://127.0.0.1:1", model="m",
                    targets=[Target("http://127.0.0.1:1", "a", 1, 1), Target("http://127.0.0.1:2", "b", 1, 2)])
    assert [two.target_of(q) for q in range(4)] == [0, 1, 0, 1]
    sub = two.for_target(two.targets[1])
    assert (sub.base_url, sub.model, sub.targets, sub.instance_id) == ("http://127.0.0.1:2", "b", [], 2)


def test_a_single_engine_run_is_a_deployment_of_one():
    spec = EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB")
    cfg = RunConfig(engine=spec, levels=[1])
    assert [(d.name, d.engine, d.weight) for d in cfg.deployment()] == [("engine", spec, 1.0)]
    assert cfg.simulated


def test_run_config_of_a_deployment_checks_names_weights_and_round_trips_through_storage():
    a = EngineSpec(kind="vllm", model="melt/tiny-qwen3", extra_args=["--api-key", "s3cret"])
    b = EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB")
    cfg = RunConfig(instances=[DeployedInstance(name="a", engine=a, weight=2), DeployedInstance(name="b", engine=b)],
                    levels=[1])
    assert cfg.engine == a and cfg.simulated          # one sim instance labels the run simulated
    doc = stored_config(cfg)
    assert "s3cret" not in str(doc)                     # every instance's secret-named flags are redacted
    again = RunConfig.model_validate(doc)
    assert [d.name for d in again.deployment()] == ["a", "b"] and again.instances[0].weight == 2
    with pytest.raises(ValueError, match="unique"):
        RunConfig(instances=[DeployedInstance(name="a", engine=a), DeployedInstance(name="a", engine=b)], levels=[1])
    with pytest.raises(ValueError, match="weights are all 0"):
        RunConfig(instances=[DeployedInstance(name="a", engine=a, weight=0)], levels=[1])
    with pytest.raises(ValueError, match="first instance"):
        RunConfig(engine=b, instances=[DeployedInstance(name="a", engine=a)], levels=[1])


def test_recipe_instances_carry_what_the_h200_run_needs():
    d = deployment_from_recipe(load_recipe("dwani-llm-pair"), engine_cmd=["python3", "-m", "vllm.entrypoints.cli.main"],
                               dummy_weights=True)
    assert d.gpu == "H200-141GB" and d.plan is not None and d.plan.fits
    by = {i.name: i for i in d.instances}
    assert set(by) == {"gemma", "qwen3"} and by["gemma"].weight == 0.7 and by["qwen3"].weight == 0.3
    for i, ip in zip(d.instances, d.plan.instances):
        e = i.engine
        assert e.engine_cmd == ["python3", "-m", "vllm.entrypoints.cli.main"] and e.dummy_weights
        assert e.quantization == "fp8" and e.max_model_len == 4096 and e.gpus == [0]
        assert e.mem_fraction == pytest.approx(ip.engine_setting()[1], abs=1e-4)  # the planner's setting
    assert sum(i.engine.mem_fraction for i in d.instances) <= 0.9 + 1e-6
    two = deployment_from_recipe(load_recipe("h200-qwen3-0.6b-two-replicas"))
    assert [i.engine.mem_fraction for i in two.instances] == [0.42, 0.42]   # the recipe's own setting wins
    assert [i.weight for i in two.instances] == [1.0, 1.0]                  # round robin


def test_a_recipe_instance_takes_engine_cmd_dummy_weights_kv_dtype_from_the_file():
    r = parse_recipe({"name": "x", "instances": [
        {"name": "a", "model": "Qwen/Qwen3-0.6B", "engine_cmd": ["/opt/v/bin/python", "-m", "vllm"],
         "dummy_weights": True, "memory": 0.3, "kv_cache_dtype": "fp8", "max_model_len": 2048,
         "extra_args": ["--enforce-eager"], "weights": "some/other-repo"}]})
    e = deployment_from_recipe(r).instances[0].engine
    assert (e.engine_cmd, e.dummy_weights, e.mem_fraction, e.kv_cache_dtype, e.max_model_len, e.extra_args) == (
        ["/opt/v/bin/python", "-m", "vllm"], True, 0.3, "fp8", 2048, ["--enforce-eager"])
    assert e.model == "Qwen/Qwen3-0.6B"  # dummy weights are built from the catalog architecture


def test_a_mix_that_does_not_fit_is_refused_with_the_planners_reason():
    with pytest.raises(DeployRefused, match=r"refused before launch: DOES NOT FIT: dwani on 1x RTX-5090.*short"):
        deployment_from_recipe(load_recipe("dwani"), gpu="RTX-5090")
    a = make_parser().parse_args(["sweep", "--recipe", "dwani", "--gpu", "RTX-5090", "--levels", "1"])
    with pytest.raises(UsageError, match="DOES NOT FIT"):
        build_config(a)


def test_bad_recipes_and_flag_clashes_name_the_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\ninstances:\n  - {name: a, model: Qwen/Qwen3-0.6B, tp: 0}\n")
    with pytest.raises(UsageError, match=r"instances\[0\]\.tp"):
        build_config(make_parser().parse_args(["sweep", "--recipe", str(f), "--levels", "1"]))
    f.write_text("name: bad\ninstances:\n  - {name: a, model: Qwen/Qwen3-0.6B, engine: sim}\n")
    with pytest.raises(UsageError, match=r"instances\[0\]\.sim_gpu"):
        build_config(make_parser().parse_args(["sweep", "--recipe", str(f), "--levels", "1"]))
    with pytest.raises(UsageError, match="drop --model"):
        build_config(make_parser().parse_args(["sweep", "--recipe", "dwani", "--model", "x", "--levels", "1"]))
    with pytest.raises(RecipeError, match=r"instances\[0\]\.weight"):
        parse_recipe({"name": "x", "instances": [{"name": "a", "model": "Qwen/Qwen3-0.6B", "weight": -1}]})


def test_sweep_recipe_builds_one_run_config():
    cfg = build_config(make_parser().parse_args(["sweep", "--recipe", "h200-qwen3-0.6b-two-replicas", "--levels",
                                                 "512,1024", "--dummy-weights"]))
    assert cfg.recipe == "h200-qwen3-0.6b-two-replicas" and cfg.gpu == "H200-141GB" and cfg.gpu_count == 1
    assert [d.name for d in cfg.deployment()] == ["replica-0", "replica-1"] and cfg.engine == cfg.instances[0].engine
    assert cfg.price_per_gpu_hour and cfg.levels == [512, 1024]


class _R:
    def __init__(self, iid, ok=True, out=10, warm=False):
        self.instance_id, self.ok, self.warmup, self.output_tokens, self.input_tokens = iid, ok, warm, out, 5
        self.ttft_ms, self.e2e_ms, self.queue_ms, self.max_tokens = 10.0, 100.0, 0.0, out
        self.error = None if ok else "x"


class _Outcome:
    duration_s, n_sent, client_cpu_pct, client_bound, cancelled = 2.0, 6, 1.0, False, False

    class itl:  # noqa: N801
        @staticmethod
        def summary_ms(_p):
            return {}

        @staticmethod
        def to_dict():
            return {}


def test_per_instance_figures_add_up_to_the_box_and_the_box_has_a_price():
    from bench.config import SLO
    from bench.metrics import summarize

    results = [_R(1), _R(1), _R(1), _R(1, ok=False), _R(2), _R(2), _R(1, warm=True)]
    targets = [Target("u1", "m1", 3, 1, name="a"), Target("u2", "m2", 1, 2, name="b")]
    per = per_instance(results, _Outcome(), SLO(), targets)
    box = summarize(results, _Outcome(), SLO())
    assert per["a"]["n_sent"] == 4 and per["a"]["n_err"] == 1 and per["b"]["n_sent"] == 2
    assert per["a"]["output_tok_s"] + per["b"]["output_tok_s"] == pytest.approx(box["output_tok_s"])
    assert per["a"]["weight_share"] == 0.75 and per["a"]["request_share"] == pytest.approx(4 / 6)
    rows = breakdown([box | {"instances": per}], gpu_count=2, price_per_gpu_hour=3.6)
    assert [r["instance"] for r in rows] == ["a", "b", BOX]
    # 2 GPUs x $3.6/h = $0.002/s over 25 out tok/s -> $80 per 1M output tokens; instances carry no price of their own
    assert rows[-1]["$/1M out tok"] == pytest.approx(0.002 / box["output_tok_s"] * 1e6)
    assert rows[0]["$/1M out tok"] is None
    assert breakdown([box]) == []


def test_gpu_sharers_counts_co_located_instances_per_gpu():
    from bench.deploy import gpu_sharers

    # two on GPU 0, a TP=2 instance on 1-2 beside one on 2, one alone on 3, an unplaced one counted on GPU 0
    assert gpu_sharers([[0], [0], [1, 2], [2], [3], []]) == [3, 3, 2, 2, 1, 3]
    assert gpu_sharers([[0, 1], [2, 3]]) == [1, 1] and gpu_sharers([]) == []


def test_an_instance_name_never_makes_a_directory_outside_its_run():
    from bench.sweep import instance_dir_name

    assert instance_dir_name("replica-0") == "replica-0"                # a plain name is its own directory
    for name in ("../../etc", "..", ".", "<b>tts</b>", "a/b", "a_b-x"):
        d = instance_dir_name(name)
        assert "/" not in d and d.strip(".") and d not in (".", "..")
    assert instance_dir_name("..").startswith("..-") and instance_dir_name("a/b").startswith("a_b-")
    assert instance_dir_name("a/b") != instance_dir_name("a_b")          # two names, two directories
    assert instance_dir_name("a/b") == instance_dir_name("a/b")          # stable: the same name finds its files
