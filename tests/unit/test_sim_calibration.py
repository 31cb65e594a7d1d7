"""The simulator reproduces the reference vLLM measurement (H100 SXM, Qwen3-0.6B, 512/128) within +-25 %, in
virtual time; and keeps a sensible shape beyond it. Same numbers as `python -m engines.sim.calibrate`."""
import pytest

from engines.sim import calibrate


@pytest.fixture(scope="module")
def perf():
    return calibrate.reference_model()


def test_within_band_of_reference(perf):
    rows = calibrate.compare(perf)
    assert [ref.concurrency for ref, _, _ in rows] == [1, 16]
    for ref, sim, err in rows:
        for name, e in err.items():
            assert abs(e) <= calibrate.TOLERANCE, f"c={ref.concurrency} {name}: {e:+.1%} off the reference"
        assert set(sim.per_request_tokens) == {calibrate.OUTPUT_LEN}


def test_shape_beyond_reference(perf):
    s128, s1024, s10k = (calibrate.run_level(perf, c) for c in (128, 1024, 10000))
    # throughput saturates once the running set is full...
    assert s10k.output_throughput == pytest.approx(s1024.output_throughput, rel=0.15)
    assert s10k.max_running == perf.max_num_seqs
    # ...and TTFT keeps growing with the queue in front of it
    assert s128.mean_ttft_ms < s1024.mean_ttft_ms < s10k.mean_ttft_ms
    assert s10k.mean_ttft_ms > 10 * s1024.mean_ttft_ms


def test_calibrate_cli_prints_table(capsys):
    assert calibrate.main(["--levels", "128"]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "5330" in out and "466" in out
