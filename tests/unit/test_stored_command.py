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
