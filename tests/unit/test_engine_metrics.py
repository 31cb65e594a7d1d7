"""Prometheus parsing and normalisation on real-looking exposition text.

VLLM_0_32 is a verbatim excerpt of GET /metrics from the real vLLM 0.32.0 (CPU build) serving a tiny dummy model
after 11 requests (18 + 8*55 prompt tokens, 36 + 8*200 generated, per the servers' usage fields). The SGLang text is
the example of sglang docs/references/production_metrics.md; the TRT-LLM text was generated with prometheus_client
using the names and labels of tensorrt_llm/metrics/collector.py."""
import math

import pytest

from storage.models import EngineMetricSample
from telemetry.engine_metrics import NORMALIZED_KEYS, metrics_path, normalize, normalize_trtllm_iteration_stats, parse_prometheus

VLLM_0_32 = """# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 14758.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0
# HELP vllm:num_requests_waiting_by_reason Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 0.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="deferred"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="tiny"} 0.0
# HELP vllm:num_preemptions_created Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_created gauge
vllm:num_preemptions_created{engine="0",model_name="tiny"} 1.7953456111286516e+09
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 458.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 1636.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 0.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 11.0
vllm:request_success_total{engine="0",finished_reason="abort",model_name="tiny"} 0.0
vllm:request_success_total{engine="0",finished_reason="error",model_name="tiny"} 0.0
vllm:request_success_total{engine="0",finished_reason="repetition",model_name="tiny"} 0.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{engine="0",finished_reason="stop",model_name="tiny"} 1.7953456111288254e+09
vllm:request_success_created{engine="0",finished_reason="length",model_name="tiny"} 1.7953456111288362e+09
vllm:request_success_created{engine="0",finished_reason="abort",model_name="tiny"} 1.795345611128847e+09
vllm:request_success_created{engine="0",finished_reason="error",model_name="tiny"} 1.7953456111288607e+09
vllm:request_success_created{engine="0",finished_reason="repetition",model_name="tiny"} 1.7953456111288755e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 11.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.17477083206176758
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{engine="0",model_name="tiny"} 1.795345611129372e+09
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 11.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 3.498309850692749
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="tiny"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",model_name="tiny"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.01",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02",model_name="tiny"} 7.0
"""

SGLANG = """# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
# HELP sglang:generation_tokens_total Number of generation tokens processed.
# TYPE sglang:generation_tokens_total counter
sglang:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.557572e+06
# HELP sglang:token_usage The token usage
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
# HELP sglang:cache_hit_rate The cache hit rate
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.007507552643049313
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.3518979474117756e+06
sglang:time_to_first_token_seconds_bucket{le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 11008.0
sglang:time_to_first_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 11008.0
# HELP sglang:func_latency_seconds Function latency in seconds
# TYPE sglang:func_latency_seconds histogram
sglang:func_latency_seconds_sum{name="generate_request"} 4.514771912145079
# HELP sglang:num_running_reqs The number of running requests
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 162.0
# HELP sglang:num_used_tokens The number of used tokens
# TYPE sglang:num_used_tokens gauge
sglang:num_used_tokens{model_name="meta-llama/Llama-3.1-8B-Instruct"} 123859.0
# HELP sglang:gen_throughput The generate throughput (token/s)
# TYPE sglang:gen_throughput gauge
sglang:gen_throughput{model_name="meta-llama/Llama-3.1-8B-Instruct"} 86.50814177726902
# HELP sglang:num_queue_reqs The number of requests in the waiting queue
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2826.0
# HELP sglang:num_requests_total Number of requests processed.
# TYPE sglang:num_requests_total counter
sglang:num_requests_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 11228.0
# HELP sglang:num_retracted_requests_total Total number of retracted requests.
# TYPE sglang:num_retracted_requests_total counter
sglang:num_retracted_requests_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 17.0
"""

TRTLLM = """# HELP trtllm_request_success_total Count of successfully processed requests.
# TYPE trtllm_request_success_total counter
trtllm_request_success_total{engine_type="trtllm",finished_reason="stop",model_name="Qwen/Qwen3-8B"} 120.0
trtllm_request_success_total{engine_type="trtllm",finished_reason="length",model_name="Qwen/Qwen3-8B"} 380.0
trtllm_request_success_total{engine_type="trtllm",finished_reason="cancelled",model_name="Qwen/Qwen3-8B"} 3.0
# HELP trtllm_prompt_tokens_total Cumulative number of prompt (input) tokens processed.
# TYPE trtllm_prompt_tokens_total counter
trtllm_prompt_tokens_total{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 256000.0
# HELP trtllm_generation_tokens_total Cumulative number of generation (output) tokens produced.
# TYPE trtllm_generation_tokens_total counter
trtllm_generation_tokens_total{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 64000.0
# HELP trtllm_kv_cache_utilization KV cache utilization
# TYPE trtllm_kv_cache_utilization gauge
trtllm_kv_cache_utilization{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 0.4375
# HELP trtllm_kv_cache_hit_rate KV cache hit rate
# TYPE trtllm_kv_cache_hit_rate gauge
trtllm_kv_cache_hit_rate{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 0.12
# HELP trtllm_num_requests_running Number of active requests
# TYPE trtllm_num_requests_running gauge
trtllm_num_requests_running{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 64.0
# HELP trtllm_num_requests_waiting Number of queued requests
# TYPE trtllm_num_requests_waiting gauge
trtllm_num_requests_waiting{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 7.0
# HELP trtllm_time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE trtllm_time_to_first_token_seconds histogram
trtllm_time_to_first_token_seconds_bucket{engine_type="trtllm",le="+Inf",model_name="Qwen/Qwen3-8B"} 3.0
trtllm_time_to_first_token_seconds_count{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 3.0
trtllm_time_to_first_token_seconds_sum{engine_type="trtllm",model_name="Qwen/Qwen3-8B"} 0.55
"""


def test_normalized_keys_match_storage_columns():
    cols = {c.name for c in EngineMetricSample.__table__.columns} - {"id", "run_id", "instance_id", "t_ns"}
    assert set(NORMALIZED_KEYS) == cols


def test_parse_real_vllm_capture():
    p = parse_prometheus(VLLM_0_32)
    assert p["vllm:prompt_tokens_total"] == [({"engine": "0", "model_name": "tiny"}, 458.0)]
    assert len(p["vllm:request_success_total"]) == 5
    assert p["python_gc_objects_collected_total"] == [({"generation": "0"}, 14758.0)]
    assert p["vllm:time_to_first_token_seconds_bucket"][0] == ({"engine": "0", "le": "0.001", "model_name": "tiny"}, 0.0)
    assert "vllm:num_preemptions_created" in p  # kept as written; normalize ignores it


def test_normalize_real_vllm_capture():
    n = normalize("vllm", parse_prometheus(VLLM_0_32))
    assert set(n) == set(NORMALIZED_KEYS)
    assert n["running"] == 0 and n["waiting"] == 0 and n["kv_cache_usage"] == 0
    assert n["prompt_tokens_total"] == 458 and n["generation_tokens_total"] == 1636
    assert n["requests_success_total"] == 11 and n["preemptions_total"] == 0
    ex = n["extra"]
    assert ex["requests_by_finished_reason"]["length"] == 11 and ex["waiting_by_reason"] == {"capacity": 0, "deferred": 0}
    assert ex["ttft_mean_s"] == pytest.approx(0.17477083206176758 / 11)
    assert ex["family"] == "vllm"
    # The sim engine speaks vLLM's names.
    assert normalize("sim", parse_prometheus(VLLM_0_32))["generation_tokens_total"] == 1636


def test_vllm_data_parallel_and_older_names():
    text = """vllm:num_requests_running{engine="0",model_name="m"} 12
vllm:num_requests_running{engine="1",model_name="m"} 9
vllm:num_requests_waiting{engine="0",model_name="m"} 3
vllm:num_requests_waiting{engine="1",model_name="m"} 0
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:gpu_cache_usage_perc{engine="1",model_name="m"} 0.25
vllm:generation_tokens_total{engine="0",model_name="m"} 1000
vllm:generation_tokens_total{engine="1",model_name="m"} 500
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 4
vllm:request_success_total{engine="1",finished_reason="length",model_name="m"} 6
vllm:request_success_total{engine="1",finished_reason="abort",model_name="m"} 2
vllm:request_success_total{engine="0",finished_reason="error",model_name="m"} 1
melt:sim_lag_seconds{model_name="m"} 0.004
"""
    n = normalize("vllm", parse_prometheus(text))
    assert n["running"] == 21 and n["waiting"] == 3
    assert n["kv_cache_usage"] == pytest.approx(0.375)         # a fraction: averaged over engines, not summed
    assert n["generation_tokens_total"] == 1500
    assert n["requests_success_total"] == 10                    # abort and error are not successes
    assert n["prompt_tokens_total"] is None and n["preemptions_total"] is None
    assert n["extra"]["sim_lag_seconds"] == pytest.approx(0.004)


def test_normalize_sglang():
    n = normalize("sglang", parse_prometheus(SGLANG))
    assert n["running"] == 162 and n["waiting"] == 2826 and n["kv_cache_usage"] == pytest.approx(0.28)
    assert n["prompt_tokens_total"] == 8_128_902 and n["generation_tokens_total"] == 7_557_572
    assert n["requests_success_total"] == 11228 and n["preemptions_total"] == 17
    assert n["extra"]["gen_throughput_tok_s"] == pytest.approx(86.508, abs=1e-3)
    assert n["extra"]["ttft_mean_s"] == pytest.approx(2.3518979474117756e6 / 11008)


def test_normalize_trtllm():
    n = normalize("trtllm", parse_prometheus(TRTLLM))
    assert (n["running"], n["waiting"], n["kv_cache_usage"]) == (64, 7, 0.4375)
    assert n["prompt_tokens_total"] == 256000 and n["generation_tokens_total"] == 64000
    assert n["requests_success_total"] == 500 and n["preemptions_total"] is None
    assert n["extra"]["kv_cache_hit_rate"] == pytest.approx(0.12)
    assert metrics_path("trtllm") == "/prometheus/metrics" and metrics_path("vllm") == "/metrics"
    stats = [{"numActiveRequests": 3, "numQueuedRequests": 1, "iterLatencyMS": 12.5,
              "kvCacheStats": {"usedNumBlocks": 30, "maxNumBlocks": 120}},
             {"numActiveRequests": 5, "numQueuedRequests": 0, "kvCacheStats": {"usedNumBlocks": 60, "maxNumBlocks": 120}}]
    j = normalize_trtllm_iteration_stats(stats)
    assert (j["running"], j["waiting"], j["kv_cache_usage"]) == (5, 0, 0.5)   # the newest iteration


def test_unknown_kind_is_detected_from_names():
    assert normalize("openai", parse_prometheus(SGLANG))["running"] == 162
    assert normalize("openai", parse_prometheus(VLLM_0_32))["prompt_tokens_total"] == 458
    n = normalize("openai", parse_prometheus("http_requests_total 5\n"))
    assert n["running"] is None and n["extra"]["family"] == "unknown"


def test_parser_edge_cases():
    text = (
        'm{path="/a,b",msg="say \\"hi\\"\\nnext",back="c:\\\\x"} 1.5 1700000000000\n'
        "m_inf +Inf\nm_ninf -Inf\nm_nan NaN\n"
        'om_counter_total{a="1"} 7 # {trace_id="abc"} 1.0 1700000000.0\n'
        "   \n# just a comment\n"
        "broken{a=\"unterminated 1\n"
        "no_value\n"
        'spaced{ a = "x" , b="y",} 2e3\n'
    )
    p = parse_prometheus(text)
    assert p["m"] == [({"path": "/a,b", "msg": 'say "hi"\nnext', "back": "c:\\x"}, 1.5)]
    assert p["m_inf"][0][1] == math.inf and p["m_ninf"][0][1] == -math.inf and math.isnan(p["m_nan"][0][1])
    assert p["om_counter_total"] == [({"a": "1"}, 7.0)]
    assert p["spaced"] == [({"a": "x", "b": "y"}, 2000.0)]
    assert "broken" not in p and "no_value" not in p
