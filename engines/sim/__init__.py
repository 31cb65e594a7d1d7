"""`sim`: Melt's built-in simulated engine. An OpenAI-compatible streaming server (server.py) that emulates
vLLM-V1-style continuous batching (scheduler.py) of a catalog model on a catalog GPU with a roofline step-time
model (model.py). Nothing here touches a GPU; everything it reports is modelled and labelled simulated.

Run it: python -m engines.sim --gpu H100-SXM-80GB --model Qwen/Qwen3-0.6B --port 8000
Check the model against the reference measurement: python -m engines.sim.calibrate
"""

SIM_VERSION = "0.1.0"
