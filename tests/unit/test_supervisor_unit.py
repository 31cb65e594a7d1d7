"""Pure parts of the supervisor: error messages, state machine guard, exit-code wording."""
import pytest

from engines.spec import LaunchPlan
from engines.supervisor import EngineProcess, EngineStartError, ProcState, _describe_exit


def test_error_message_carries_log_tail():
    e = EngineStartError("engine exited with exit code 1", "line a\nline b\n")
    assert e.log_tail == "line a\nline b\n"
    assert str(e).startswith("engine exited with exit code 1")
    assert str(e).endswith("line a\nline b")
    assert str(EngineStartError("plain")) == "plain"


def test_illegal_state_change_is_refused(tmp_path):
    seen = []
    e = EngineProcess(LaunchPlan(argv=["x"], port=1, served_model_name="m"), tmp_path / "l.log",
                      on_event=lambda k, m: seen.append((k, m)))
    with pytest.raises(RuntimeError, match="illegal state change created -> ready"):
        e._set_state(ProcState.ready)
    e._set_state(ProcState.starting)
    assert seen == [("state", "starting")]


def test_faulty_listener_does_not_break_supervision(tmp_path):
    def boom(kind, msg):
        raise ValueError("listener bug")

    e = EngineProcess(LaunchPlan(argv=["x"], port=1, served_model_name="m"), tmp_path / "l.log", on_event=boom)
    e._set_state(ProcState.starting)
    assert e.state == ProcState.starting


def test_log_tail_and_phases(tmp_path):
    log = tmp_path / "l.log"
    phases = []
    e = EngineProcess(LaunchPlan(argv=["x"], port=1, served_model_name="m",
                                 phase_patterns=[(r"Loading", "loading weights"), (r"Capturing", "graphs")]),
                      log, on_event=lambda k, m: phases.append(m) if k == "phase" else None)
    log.write_bytes(b"a\nLoading 1\rLoading 2\rCapturing 50%\rCapturing 100%\nlast")
    e.pump_log()
    assert phases == ["loading weights", "graphs"]  # \r-redrawn progress bars count as lines; no repeats
    assert e.log_tail(2) == "Capturing 100%\nlast"


@pytest.mark.parametrize("code,word", [(-9, "SIGKILL"), (137, "out-of-memory"), (1, "error"), (0, "clean")])
def test_describe_exit(code, word):
    assert word in _describe_exit(code)
