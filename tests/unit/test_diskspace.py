"""The free-space preflight: warns when the history's disk has far less room than the planned levels will write."""
import shutil

from bench.config import RunConfig, WorkloadSpec
from bench.diskspace import REQUEST_ROW_BYTES, disk_space_warning, planned_db_bytes
from engines.spec import EngineSpec


def _config(**workload) -> RunConfig:
    return RunConfig(levels=[10, 100], workload=WorkloadSpec(**workload),
                     engine=EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB"))


def test_planned_bytes_count_every_levels_requests():
    need, rows = planned_db_bytes(_config(requests=1000, warmup_requests=5))
    assert rows == 2 * 1005 and need >= rows * REQUEST_ROW_BYTES
    # a duration-bound level: a request per user per second, plus its telemetry and engine-metric rows
    need_d, rows_d = planned_db_bytes(_config(duration_s=60))
    assert rows_d == 10 * 60 + 100 * 60 and need_d > rows_d * REQUEST_ROW_BYTES


def test_warns_when_the_disk_has_far_less_room_than_the_sweep_writes(tmp_path):
    db = tmp_path / "melt.db"
    free = shutil.disk_usage(tmp_path).free
    huge = _config(requests=free // REQUEST_ROW_BYTES)  # two levels of it: twice the free space, at least
    msg = disk_space_warning(huge, db)
    assert msg and msg.startswith("warning: only") and str(tmp_path) in msg and "full disk" in msg
    assert disk_space_warning(_config(requests=100), db) is None
    assert disk_space_warning(huge, "postgresql+psycopg://u:p@127.0.0.1/melt") is None  # a server's disk is not ours
