"""Adapter facts `llmd render` relies on: listen host, tracing, multinode, command detection."""

from __future__ import annotations

import pytest

from llmd.engines import MultinodeSpec, ServeSpec, TracingSpec, engine_for_command, get_adapter

LWS = ("$(LWS_LEADER_ADDRESS)", "$(LWS_GROUP_SIZE)", "$(LWS_WORKER_INDEX)")


def test_listen_host_makes_the_server_reachable(engine: str) -> None:
    adapter = get_adapter(engine)
    args = adapter.serve_args(ServeSpec(model="m", host=adapter.listen_host))
    # SGLang binds 127.0.0.1 unless told otherwise; vLLM binds every interface by default.
    assert ("--host" in args) == (adapter.listen_host is not None)


def test_tracing_flags(engine: str) -> None:
    spec = ServeSpec(model="m", tracing=TracingSpec("http://otel:4317", "all"))
    args = get_adapter(engine).serve_args(spec)
    endpoint = args[args.index("--otlp-traces-endpoint") + 1]
    assert endpoint == {"vllm": "http://otel:4317", "sglang": "otel:4317"}[engine]
    assert ("--collect-detailed-traces" in args) == (engine == "vllm")
    assert ("--enable-trace" in args) == (engine == "sglang")
    user = ("--otlp-traces-endpoint", "other:1")
    args = get_adapter(engine).serve_args(ServeSpec(model="m", extra_args=user,
                                                    tracing=TracingSpec("x:1")))
    assert args.count("--otlp-traces-endpoint") == 1


@pytest.mark.parametrize("worker", [False, True])
def test_multinode_leader_and_worker(engine: str, worker: bool) -> None:
    spec = ServeSpec(model="m", data_parallel=8, data_parallel_local=4,
                     multinode=MultinodeSpec(*LWS, worker=worker))
    args = get_adapter(engine).serve_args(spec)
    if engine == "sglang":  # one argv for every pod of the group
        assert "--headless" not in args and args[args.index("--node-rank") + 1] == LWS[2]
    else:
        assert args[args.index("--data-parallel-address") + 1] == LWS[0]
        assert ("--headless" in args) == worker
        if worker:
            rank = args[args.index("--data-parallel-start-rank") + 1]
            assert rank == "$$(($(LWS_WORKER_INDEX) * 4))"


def test_vllm_worker_rank_without_arithmetic() -> None:
    spec = ServeSpec(model="m", data_parallel=2, multinode=MultinodeSpec(*LWS, worker=True))
    args = get_adapter("vllm").serve_args(spec)
    assert args[args.index("--data-parallel-start-rank") + 1] == "$(LWS_WORKER_INDEX)"


@pytest.mark.parametrize(("argv", "expected"), [
    (["vllm", "serve", "m"], "vllm"),
    (["python3", "-m", "vllm.entrypoints.openai.api_server"], "vllm"),
    (["python3", "-m", "sglang.launch_server", "--model-path", "m"], "sglang"),
    (["/bin/bash", "-c", "set -e; python3 -m sglang.launch_server --port 8000"], "sglang"),
    (["/bin/sh", "-c", "exec vllm serve m"], "vllm"),
    (["my-server", "--port", "8000"], None),
])
def test_engine_for_command(argv: list[str], expected: str | None) -> None:
    assert engine_for_command(argv) == expected


@pytest.mark.parametrize("role", ["both", "prefill", "decode"])
def test_side_ports(engine: str, role: str) -> None:
    ports = get_adapter(engine).side_ports(ServeSpec(model="m", role=role))  # type: ignore[arg-type]
    assert ports == ((8998,) if (engine, role) == ("sglang", "prefill") else ())


def test_env_prefixes_name_only_this_engine(engine: str) -> None:
    """`llmd render` keeps one engine's env (VLLM_*) off the other's containers by prefix."""
    from llmd.engines import ENGINES

    own = get_adapter(engine).env_prefixes
    assert own and all(p.isupper() and p.endswith("_") for p in own)
    for other in ENGINES:
        if other != engine:
            theirs = get_adapter(other).env_prefixes
            assert not [(a, b) for a in own for b in theirs
                        if a.startswith(b) or b.startswith(a)]
