"""Launch form values <-> RunConfig for level timing: stop rule, ramp-up, request rates (one or a sweep), repeats."""
import pytest

from app.ui.launch_form import LaunchError, LaunchValues, build_run_config, values_from_config


def sim(**kw) -> LaunchValues:
    return LaunchValues(engine="sim", gpu="H100-SXM-80GB", **kw)


def test_default_form_uses_the_steady_state_rule_and_auto_ramp():
    c = build_run_config(sim())
    w = c.workload
    assert w.steady_rule and w.ramp_up_s is None and w.request_rate is None and w.rates is None and c.repeat == 1
    assert (w.min_steady_s, w.min_requests_per_user) == (30.0, 5)


def test_rates_burstiness_ramp_and_repeats_round_trip():
    c = build_run_config(sim(arrivals="rate", rates="5, 10,20", burstiness=0.5, repeat=3, levels="64",
                             stop_by="duration", duration_s=20.0))
    w = c.workload
    assert w.rates == [5.0, 10.0, 20.0] and w.request_rate is None and w.burstiness == 0.5 and c.repeat == 3
    assert len(c.planned_levels()) == 9
    back = values_from_config(c.model_dump(mode="json"))
    assert (back.arrivals, back.rates, back.burstiness, back.repeat, back.stop_by) == ("rate", "5,10,20", 0.5, 3,
                                                                                       "duration")
    one = build_run_config(sim(arrivals="rate", rates="7"))
    assert one.workload.request_rate == 7.0 and one.workload.rates is None
    assert values_from_config(one.model_dump(mode="json")).rates == "7"
    closed = build_run_config(sim(ramp_up="0", stop_by="requests", requests=50, burstiness=0.5))
    assert closed.workload.ramp_up_s == 0.0 and closed.workload.burstiness == 1.0  # burstiness is for rates only
    assert values_from_config(closed.model_dump(mode="json")).ramp_up == "0"
    assert values_from_config(build_run_config(sim()).model_dump(mode="json")).stop_by == "steady"


@pytest.mark.parametrize("kw, match", [
    (dict(arrivals="rate", rates="5,x"), "Request rates"),
    (dict(arrivals="rate", rates=""), "Request rates"),
    (dict(ramp_up="soon"), "Ramp-up"),
    (dict(ramp_up="-2"), "Ramp-up"),
    (dict(repeat=0), "repeat"),
])
def test_bad_values_name_the_field(kw, match):
    with pytest.raises(LaunchError, match=match):
        build_run_config(sim(**kw))


def test_launch_form_loads_a_recipe_and_refuses_one_that_does_not_fit():
    from app.ui.launch_form import LaunchValues, build_run_config, form_problems, recipe_rows

    cfg = build_run_config(LaunchValues(recipe="dwani-llm-pair", levels="10,100", dummy_weights=True,
                                        engine_cmd="python3 -m vllm.entrypoints.cli.main"))
    assert [d.name for d in cfg.deployment()] == ["gemma", "qwen3"] and cfg.recipe == "dwani-llm-pair"
    assert cfg.gpu == "H200-141GB" and all(d.engine.dummy_weights for d in cfg.instances)
    assert [r["traffic %"] for r in recipe_rows(cfg)] == ["70", "30"]
    bad = form_problems(LaunchValues(recipe="h200x8-tp8", levels="1"))  # fits only on 8 GPUs: planned on its own
    assert bad == []
    problems = form_problems(LaunchValues(recipe="no-such-recipe", levels="1"))
    assert problems and problems[0].startswith("Recipe: recipe no-such-recipe: no such file")


def test_launch_form_carries_a_recipes_services(tmp_path):
    import yaml

    from app.ui.launch_form import LaunchValues, build_run_config

    f = tmp_path / "svc.yaml"
    f.write_text(yaml.safe_dump({"name": "svc", "gpu": "H100-SXM-80GB", "instances": [
        {"name": "llm", "engine": "sim", "model": "Qwen/Qwen3-0.6B", "sim_gpu": "H100-SXM-80GB"}], "services": [
        {"name": "tts", "kind": "tts", "model": "ai4bharat/IndicF5", "vram_gb": 1.4,
         "command": ["./tts-server", "--port", "{port}"], "health_path": "/ready"},
        {"name": "asr", "kind": "asr", "model": "m", "vram_gb": 2.5}]}))
    cfg = build_run_config(LaunchValues(recipe=str(f), levels="1"))
    assert [(s.name, s.engine.kind, s.engine.engine_cmd, s.engine.health_path, s.weight) for s in cfg.services] == [
        ("tts", "custom", ["./tts-server", "--port", "{port}"], "/ready", 0.0)]   # asr has no command: counted only
def test_slo_search_mode_and_alerts_round_trip():
    from app.ui.launch_form import LaunchValues, build_run_config, form_problems, values_from_config

    v = LaunchValues(gpu="H100-SXM-80GB", mode="slo", slo_preset="custom", slo_ttft_ms=300, slo_percentile=95,
                     slo_start=2, slo_max=128, levels="not used", alerts="ttft_p99_ms=150,300\noutput_tok_s=100,off")
    assert form_problems(v) == []
    c = build_run_config(v)
    assert [(x.metric, x.percentile, x.max_ms) for x in c.slo_search.limits] == [("ttft", 95, 300)]
    assert (c.slo_search.start, c.slo_search.max_value, c.levels) == (2, 128, [2])
    assert c.workload.slo.ttft_ms == 300                    # goodput there counts requests within the limit
    assert c.alerts.ttft_p99_ms.critical == 300 and c.alerts.output_tok_s.warning == 100
    back = values_from_config(c.model_dump())
    assert (back.mode, back.slo_preset, back.slo_ttft_ms, back.slo_percentile, back.slo_max) == (
        "slo", "custom", 300, 95, 128)
    assert back.alerts.splitlines() == ["ttft_p99_ms=150,300", "output_tok_s=100,off"]
    assert build_run_config(back).model_dump() == c.model_dump()
    preset = build_run_config(LaunchValues(gpu="H100-SXM-80GB", model="meta-llama/Meta-Llama-3-70B-Instruct",
                                           mode="slo", slo_preset="standard"))
    assert [x.max_ms for x in preset.slo_search.limits] == [2000, 200]   # MLPerf llama2-70b row
    assert form_problems(LaunchValues(gpu="H100-SXM-80GB", mode="slo", slo_preset="custom"))
    assert any("Alerts" in p for p in form_problems(LaunchValues(gpu="H100-SXM-80GB", alerts="nope=1")))


def test_connect_at_go_round_trips_through_the_form():
    c = build_run_config(sim(connect_at_go=True))
    assert c.workload.preconnect is False
    assert values_from_config(c.model_dump(mode="json")).connect_at_go is True
    assert build_run_config(sim()).workload.preconnect is True            # Melt's default: pre-connected
