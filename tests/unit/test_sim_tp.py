"""Tensor parallel in the simulator (engines/sim/model.py) and recipes served on the simulator (bench/deploy.py,
`--recipe R --engine sim`): TP speeds a 70B up but by less than the GPUs it adds, the all-reduce term by hand, the
KV tokens are the planner's, DP becomes replicas, and a layout that does not fit is refused with the planner's reason.
All SIMULATED; virtual time, no sockets."""
from __future__ import annotations

import pytest

from bench.cli import UsageError, build_config, make_parser
from bench.deploy import DeployRefused, deployment_from_recipe
from bench.plan import plan
from catalog import CatalogError, get_gpu, get_model, load_models
from catalog.recipes import load_recipe, parse_recipe
from engines.sim.adapter import build_plan
from engines.sim.model import PerfModel, SimKnobs, StepLoad
from engines.sim.scheduler import simulate_closed_loop

H200 = get_gpu("H200-141GB")
L40S = get_gpu("L40S")
LLAMA70 = get_model("meta-llama/Meta-Llama-3-70B-Instruct")


def _perf(tp: int, gpu=H200) -> PerfModel:
    return PerfModel(gpu, LLAMA70, SimKnobs(tp=tp, max_model_len=8192))


@pytest.mark.parametrize("concurrency", [1, 64, 512])
def test_tp8_of_a_70b_is_faster_than_tp4_but_less_than_twice(concurrency):
    out = {tp: simulate_closed_loop(_perf(tp), concurrency, max(64, 2 * concurrency), 512, 128).output_throughput
           for tp in (4, 8)}
    assert out[4] < out[8] < 2 * out[4], out


def test_allreduce_and_shards_by_hand():
    p8 = _perf(8)
    pr = p8.profile
    hidden, layers = LLAMA70.hidden_size, LLAMA70.num_layers
    ring = 2 * 7 / 8 * 1 * hidden * 2                       # one decode token, bf16 hidden state, ring all-reduce
    want = 2 * layers * (pr.allreduce_latency_s + ring / (450e9 * pr.link_efficiency))
    cost = p8.step_cost(StepLoad(((1, 512),), 1))
    assert cost.t_comm_s == pytest.approx(want)
    assert p8.weight_bytes_per_gpu == pytest.approx(p8.weight_bytes_total / 8)
    assert p8.kv_bytes_per_token == 2 * layers * 1 * LLAMA70.head_dim * 2    # 8 KV heads over 8 GPUs: one each
    gpu_bytes = p8.weights_streamed_bytes(1) / 8 + 513 * p8.kv_bytes_per_token
    assert cost.t_mem_s == pytest.approx(gpu_bytes / (4800e9 * pr.bw_efficiency * pr.tp_efficiency))
    assert PerfModel(H200, get_model("Qwen/Qwen3-0.6B")).step_cost(StepLoad(((1, 512),), 1)).t_comm_s == 0.0


def test_no_nvlink_in_the_catalog_uses_the_stated_pcie_figure():
    assert L40S.interconnect_gbs is None
    pcie = PerfModel(L40S, get_model("Qwen/Qwen3-8B"), SimKnobs(tp=2, max_model_len=8192))
    nvl = PerfModel(H200, get_model("Qwen/Qwen3-8B"), SimKnobs(tp=2, max_model_len=8192))
    assert pcie.link_gbs == pcie.profile.fallback_interconnect_gbs and pcie.link_source == "stated PCIe fallback"
    assert pcie.allreduce_time(4096) > nvl.allreduce_time(4096) * 5


def test_tp_that_does_not_divide_the_heads_is_refused():
    with pytest.raises(CatalogError, match="do not divide by TP 3"):
        _perf(3)


def test_simulated_recipe_kv_tokens_are_the_planners():
    recipe = load_recipe("h200x8-two-70b-tp4")
    planned = plan(recipe, H200, load_models(), count=8)
    d = deployment_from_recipe(recipe, simulate=True)
    assert [i.name for i in d.instances] == ["llama70b-a", "llama70b-b"]
    assert "SIMULATED" in d.note
    for inst, ip in zip(d.instances, planned.instances):
        spec = inst.engine
        assert spec.kind == "sim" and spec.simulated and spec.tp == 4 and spec.sim_gpu == "H200-141GB"
        assert spec.extra_args == ["--kv-cache-tokens", str(ip.fit.kv_tokens)]
        assert spec.mem_fraction == pytest.approx(ip.fraction, abs=1e-4)
        argv = build_plan(spec, "127.0.0.1", 1, None).argv
        assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
        assert argv[argv.index("--gpu-indices") + 1] == ",".join(map(str, ip.gpus))
        perf = PerfModel(H200, LLAMA70, SimKnobs(tp=4, max_model_len=8192, mem_fraction=spec.mem_fraction,
                                                 kv_cache_tokens=ip.fit.kv_tokens))
        assert 0 <= ip.fit.kv_tokens - perf.kv_capacity_tokens < perf.block_size   # the planner's, in 16-token blocks
    assert planned.instances[0].kv_tokens == 1_202_102                               # tests/unit/test_plan.py


def test_dp_becomes_sim_replicas_on_their_own_gpus():
    recipe = parse_recipe({"name": "dp", "gpu": "H200-141GB", "count": 4, "instances": [
        {"name": "l8", "model": "meta-llama/Llama-3.1-8B-Instruct", "tp": 2, "dp": 2, "max_model_len": 8192,
         "weight": 2}]})
    d = deployment_from_recipe(recipe, simulate=True)
    assert [(i.name, i.engine.gpus, i.weight) for i in d.instances] == [("l8-dp0", [0, 1], 1.0),
                                                                         ("l8-dp1", [2, 3], 1.0)]


def test_a_layout_that_does_not_fit_is_refused_with_the_planners_reason():
    recipe = parse_recipe({"name": "too-big", "gpu": "H200-141GB", "count": 1, "instances": [
        {"name": "llama70b", "model": "meta-llama/Meta-Llama-3-70B-Instruct", "max_model_len": 8192}]})
    reason = plan(recipe, H200, load_models(), count=1).verdict()
    assert reason.startswith("DOES NOT FIT")
    with pytest.raises(DeployRefused) as e:
        deployment_from_recipe(recipe, simulate=True)
    assert reason in str(e.value)


def test_cli_engine_sim_with_a_recipe_simulates_every_instance():
    a = make_parser().parse_args(["sweep", "--recipe", "h200x8-hybrid", "--engine", "sim", "--levels", "10"])
    cfg = build_config(a)
    assert cfg.simulated and all(i.engine.kind == "sim" for i in cfg.instances)
    assert [i.engine.tp for i in cfg.instances] == [4, 2, 1, 1]
    assert cfg.gpu == "H200-141GB" and cfg.gpu_count == 8
    real = build_config(make_parser().parse_args(["sweep", "--recipe", "h200x8-hybrid", "--levels", "10"]))
    assert [i.engine.kind for i in real.instances] == ["vllm", "sglang", "vllm", "vllm"]   # as written
    with pytest.raises(UsageError, match="--engine"):
        build_config(make_parser().parse_args(["sweep", "--recipe", "h200x8-tp8", "--engine", "vllm"]))


def test_layout_prediction_in_virtual_time_splits_users_and_refuses_what_does_not_fit():
    from bench.sim_layout import predict

    two = predict(load_recipe("h200x8-two-70b-tp4"), 64, requests_per_user=1)
    assert [i.users for i in two.instances] == [32, 32]
    assert [i.kv_tokens for i in two.instances] == [1_202_102, 1_202_102]
    assert two.output_tok_s == pytest.approx(sum(i.output_tok_s for i in two.instances))
    assert 8 * 70 < two.power_w <= 8 * 700 and two.idle_gpus == 0    # eight modelled GPUs, within idle..TDP
    assert two.usd_per_million(3.79) == pytest.approx(8 * 3.79 / 3600 / two.output_tok_s * 1e6)
    too_big = parse_recipe({"name": "too-big", "gpu": "H200-141GB", "count": 1, "instances": [
        {"name": "llama70b", "model": "meta-llama/Meta-Llama-3-70B-Instruct", "max_model_len": 8192}]})
    with pytest.raises(DeployRefused, match="DOES NOT FIT"):
        predict(too_big, 10)


def test_instances_sharing_a_gpu_split_it_and_gguf_recipes_run_on_the_sim():
    """The dwani.ai LLM pair on one H200: each sim instance gets half the card (--gpu-share 0.5), which halves its
    bandwidth and FLOPs; the dwani mix's GGUF instances are simulated as weight-only quantization."""
    d = deployment_from_recipe(load_recipe("dwani-llm-pair"), simulate=True)
    assert [i.engine.extra_args[-2:] for i in d.instances] == [["--gpu-share", "0.5"]] * 2
    assert "gemma, qwen3 share their GPU" in d.note
    whole = PerfModel(H200, get_model("Qwen/Qwen3-30B-A3B"), SimKnobs(weight_dtype="fp8"))
    half = PerfModel(H200, get_model("Qwen/Qwen3-30B-A3B"), SimKnobs(weight_dtype="fp8", gpu_share=0.5))
    assert half.bandwidth == pytest.approx(whole.bandwidth / 2) and half.peak_flops == pytest.approx(whole.peak_flops / 2)
    # one instance per GPU: no share flag
    alone = deployment_from_recipe(load_recipe("h200x8-eight-8b"), simulate=True)
    assert all("--gpu-share" not in i.engine.extra_args for i in alone.instances)
    dwani = deployment_from_recipe(load_recipe("dwani"), gpu="H200-141GB", simulate=True)
    assert [i.engine.quantization for i in dwani.instances] == ["gguf_q4_0", "gguf_q8_0"]
