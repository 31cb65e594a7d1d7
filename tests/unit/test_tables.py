"""bench.tables: the level table as people read it (issue 11 item 5)."""
from bench.tables import fmt_ms, fmt_rate, readable_levels


def row(**kw):
    base = {"concurrency": 16, "status": "completed", "n_requested": 100, "n_ok": 98, "n_err": 2, "duration_s": 12.345,
            "output_tok_s": 1234.5678, "tok_s_per_user": 77.1604, "tok_s_per_gpu": 1234.5678, "req_s": 7.9412,
            "goodput_req_s": 7.5, "ttft_p50_ms": 45.678, "ttft_p99_ms": 123.456, "tpot_p50_ms": 4.5678,
            "itl_p50_ms": 4.4, "e2e_p50_ms": 1234.5, "client_cpu_pct": 12.3, "client_bound": False,
            "request_rate": None, "repeat": 1, "j_per_output_token": None}
    return base | kw


def test_formats():
    assert fmt_rate(1234.5678) == "1,235" and fmt_rate(45.678) == "45.7" and fmt_rate(4.5678) == "4.57"
    assert fmt_ms(None) == "–" and fmt_rate(float("nan")) == "–"


def test_chosen_columns_units_and_no_none():
    out = readable_levels([row(), row(concurrency=64, status="running", n_requested=None, n_ok=10, n_err=0,
                                      duration_s=None, output_tok_s=None, ttft_p50_ms=None)])
    first, running = out
    assert list(first)[:5] == ["concurrency", "status", "ok / planned", "failed", "duration s"]
    assert first["output tok/s"] == "1,235" and first["TTFT p50 ms"] == "45.7" and first["TPOT p50 ms"] == "4.57"
    assert first["ok / planned"] == "98 / 100" and first["client CPU"] == "12%"
    assert running["ok / planned"] == "10" and running["duration s"] == "–" and running["output tok/s"] == "–"
    assert not any(v in ("None", "nan") for r in out for v in r.values())
    # optional columns stay out when no level has them
    assert not {"rate req/s", "repeat", "steady output tok/s", "J / output token"} & set(first)


def test_optional_columns_when_present():
    out = readable_levels([row(repeat=1, steady_output_tok_s=1300.0, steady_ttft_p50_ms=40.0, j_per_output_token=0.0421),
                           row(repeat=2, client_bound=True, request_rate=5.0)])
    assert [r["repeat"] for r in out] == ["1", "2"]
    assert out[0]["steady output tok/s"] == "1,300" and out[1]["steady output tok/s"] == "–"
    assert out[0]["steady TTFT p50 ms"] == "40.0" and out[0]["J / output token"] == "0.0421"
    assert out[1]["rate req/s"] == "5.00" and out[0]["rate req/s"] == "–"
    assert out[1]["client CPU"] == "12% client-bound!"


def test_roofline_column_only_when_a_level_has_it():
    from bench.tables import readable_levels

    plain = readable_levels([{"concurrency": 4, "status": "completed"}])
    assert "roofline %" not in plain[0]
    rows = readable_levels([{"concurrency": 4, "status": "completed", "roofline_pct": 23.456},
                            {"concurrency": 8, "status": "completed"}])
    assert rows[0]["roofline %"] == "23.5" and rows[1]["roofline %"] == "–"


def test_server_cpu_column_names_the_busiest_process_and_the_frontend_limit():
    plain = readable_levels([row()])
    assert "server CPU" not in plain[0]  # a server Melt did not launch (or a run from before the reading)
    out = readable_levels([row(server_cpu_pct=97.4, server_cpu_proc="VLLM::APIServer", frontend_bound=True),
                           row(server_cpu_pct=40.0, server_cpu_proc="python")])
    assert out[0]["server CPU"] == "97% VLLM::APIServer frontend-bound!" and out[1]["server CPU"] == "40% python"
