"""Custom services: a non-LLM server of a deployment (translate, TTS, ASR, ...) started from its own argv.

A recipe's service with a `command` (catalog.recipes.Service) becomes a ServiceLaunch (bench/config.py); this module
turns it into the supervisor's LaunchPlan: the argv as given (never a shell string) with `{port}` and `{host}` filled
in, CUDA_VISIBLE_DEVICES set to its GPU, ready when its health path answers 200 (no completion probe: it is not an
OpenAI server) and no /metrics to scrape. Pure: no I/O.
"""
from __future__ import annotations

from engines.spec import LaunchPlan


def service_plan(name: str, argv: list[str], health_path: str, gpu: int, host: str, port: int) -> LaunchPlan:
    """The LaunchPlan of one service. A placeholder other than {port} / {host} is an error naming it."""
    filled = []
    for arg in argv:
        try:
            filled.append(arg.format(port=port, host=host))
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"service {name}: command argument {arg!r}: only {{port}} and {{host}} can be filled "
                             f"in ({e!r})") from None
    return LaunchPlan(argv=filled, env={"CUDA_VISIBLE_DEVICES": str(gpu), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
                      host=host, port=port, health_path=health_path, served_model_name=name, metrics=False,
                      probe="health")
