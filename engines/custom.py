"""Custom services: a non-LLM server of a deployment (translate, TTS, ASR, ...) started from its own argv.

A recipe's service with a `command` (catalog.recipes.Service) becomes a deployment entry of engine kind "custom"
(RunConfig.services, bench/deploy.py); this module turns it into the supervisor's LaunchPlan: the argv as given
(never a shell string) with the literal `{port}` and `{host}` replaced, CUDA_VISIBLE_DEVICES set to its GPU, ready
when its health path answers 200 (no completion probe: it is not an OpenAI server) and no /metrics to scrape.
Pure: no I/O.
"""
from __future__ import annotations

from engines.spec import LaunchPlan


def service_plan(name: str, argv: list[str], health_path: str, gpu: int, host: str, port: int) -> LaunchPlan:
    """The LaunchPlan of one service: the literal `{port}` and `{host}` in its arguments replaced (nothing else is
    interpreted: other braces, JSON included, pass as they are). `{port}` must appear: Melt picks the port and
    health-checks it there."""
    if not any("{port}" in a for a in argv):
        raise ValueError(f"service {name}: its command must take {{port}} (Melt picks a free port and checks "
                         f"{health_path} there), e.g. [..., '--port', '{{port}}']")
    filled = [a.replace("{port}", str(port)).replace("{host}", host) for a in argv]
    return LaunchPlan(argv=filled, env={"CUDA_VISIBLE_DEVICES": str(gpu), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
                      host=host, port=port, health_path=health_path, served_model_name=name, metrics=False,
                      probe="health")
