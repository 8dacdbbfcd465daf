"""Golden serve argv for both engines and every role."""

from __future__ import annotations

import pytest

from llmd.engines import KvEventsSpec, LoraSpec, MultinodeSpec, ServeSpec, get_adapter

NIXL = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
BASE = dict(model="Qwen/Qwen3-0.6B", served_model_name="qwen", host="0.0.0.0", port=8200)

GOLDEN = {
    ("vllm", "both"): ["vllm", "serve", "Qwen/Qwen3-0.6B", "--host", "0.0.0.0", "--port", "8200",
                       "--served-model-name", "qwen"],
    ("vllm", "prefill"): ["vllm", "serve", "Qwen/Qwen3-0.6B", "--host", "0.0.0.0", "--port", "8200",
                          "--served-model-name", "qwen", "--kv-transfer-config", NIXL],
    ("vllm", "decode"): ["vllm", "serve", "Qwen/Qwen3-0.6B", "--host", "0.0.0.0", "--port", "8200",
                         "--served-model-name", "qwen", "--kv-transfer-config", NIXL],
    ("sglang", "both"): ["python3", "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen3-0.6B",
                         "--host", "0.0.0.0", "--port", "8200", "--served-model-name", "qwen",
                         "--enable-metrics"],
    ("sglang", "prefill"): ["python3", "-m", "sglang.launch_server", "--model-path",
                            "Qwen/Qwen3-0.6B", "--host", "0.0.0.0", "--port", "8200",
                            "--served-model-name", "qwen", "--enable-metrics",
                            "--disaggregation-mode", "prefill",
                            "--disaggregation-transfer-backend", "nixl",
                            "--disaggregation-bootstrap-port", "8998"],
    ("sglang", "decode"): ["python3", "-m", "sglang.launch_server", "--model-path",
                           "Qwen/Qwen3-0.6B", "--host", "0.0.0.0", "--port", "8200",
                           "--served-model-name", "qwen", "--enable-metrics",
                           "--disaggregation-mode", "decode",
                           "--disaggregation-transfer-backend", "nixl"],
}


@pytest.mark.parametrize("role", ["both", "prefill", "decode"])
def test_golden_argv(engine: str, role: str) -> None:
    spec = ServeSpec(**BASE, role=role)  # type: ignore[arg-type]
    assert get_adapter(engine).serve_argv(spec) == GOLDEN[(engine, role)]


def test_parallelism_and_passthrough(engine: str) -> None:
    spec = ServeSpec(model="m", tensor_parallel=2, data_parallel=4, data_parallel_local=2,
                     extra_args=("--max-model-len", "4096"))
    args = get_adapter(engine).serve_args(spec)
    assert args[-2:] == ["--max-model-len", "4096"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--data-parallel-size") + 1] == "4"
    # Only vLLM has a local data-parallel flag; SGLang would reject it.
    assert ("--data-parallel-size-local" in args) == (engine == "vllm")


def test_parallelism_one_is_not_passed(engine: str) -> None:
    args = get_adapter(engine).serve_args(ServeSpec(model="m"))
    assert not any("parallel" in a for a in args)


def test_user_flags_are_not_injected_twice(engine: str) -> None:
    adapter = get_adapter(engine)
    pd_flag = {"vllm": "--kv-transfer-config", "sglang": "--disaggregation-mode"}[engine]
    user = (pd_flag, "custom") if engine == "vllm" else (f"{pd_flag}=decode",)
    args = adapter.serve_args(ServeSpec(model="m", role="decode", extra_args=user))
    assert sum(a.startswith(pd_flag) for a in args) == 1


def test_kv_events(engine: str) -> None:
    spec = ServeSpec(model="m", kv_events=KvEventsSpec("tcp://*:5557", "kv@1.2.3.4:8000@m"))
    args = get_adapter(engine).serve_args(spec)
    config = args[args.index("--kv-events-config") + 1]
    assert '"endpoint":"tcp://*:5557"' in config and '"topic":"kv@1.2.3.4:8000@m"' in config
    assert ("enable_kv_cache_events" in config) == (engine == "vllm")


def test_model_as_flag_for_image_default() -> None:
    assert get_adapter("vllm").serve_args(ServeSpec(model="m"), model_as_flag=True)[:2] == [
        "--model", "m"]
    assert get_adapter("sglang").serve_args(ServeSpec(model="m"), model_as_flag=True)[:2] == [
        "--model-path", "m"]


def test_sglang_multinode() -> None:
    spec = ServeSpec(model="m", multinode=MultinodeSpec(
        "$(LWS_LEADER_ADDRESS)", "$(LWS_GROUP_SIZE)", "$(LWS_WORKER_INDEX)", 20000))
    args = get_adapter("sglang").serve_args(spec)
    i = args.index("--dist-init-addr")
    assert args[i:i + 6] == ["--dist-init-addr", "$(LWS_LEADER_ADDRESS):20000", "--nnodes",
                             "$(LWS_GROUP_SIZE)", "--node-rank", "$(LWS_WORKER_INDEX)"]


def test_probes_are_engine_specific() -> None:
    assert get_adapter("vllm").probes.liveness.path == "/health"
    assert get_adapter("sglang").probes.startup.path == "/health_generate"


LORA_EXPERT = {
    "vllm": ["--enable-expert-parallel", "--enable-lora", "--lora-modules", "sql=org/sql",
             "chat=/adapters/chat", "--max-lora-rank", "32", "--max-loras", "4"],
    "sglang": ["--ep-size", "4", "--enable-lora", "--lora-paths", "sql=org/sql",
               "chat=/adapters/chat", "--max-lora-rank", "32", "--max-loras-per-batch", "4"],
}


def test_lora_adapters_and_expert_parallelism_use_each_engines_flags(engine: str) -> None:
    lora = LoraSpec((("sql", "org/sql"), ("chat", "/adapters/chat")), max_rank=32,
                    max_adapters=4)
    spec = ServeSpec(**BASE, tensor_parallel=4, expert_parallel=True, lora=lora)  # type: ignore[arg-type]
    argv = get_adapter(engine).serve_argv(spec)
    assert argv[-len(LORA_EXPERT[engine]):] == LORA_EXPERT[engine]
    # A flag the user passes is not injected twice.
    user = ServeSpec(**BASE, lora=lora, extra_args=("--enable-lora",))  # type: ignore[arg-type]
    assert get_adapter(engine).serve_argv(user).count("--enable-lora") == 1
