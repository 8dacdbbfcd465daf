"""Run inside an engine's own venv: parse argv lists with that engine's real argument parser.

stdin: JSON {"engine": "vllm"|"sglang", "cases": [{"id": str, "args": [str, ...]}]}
stdout: JSON [{"id": str, "ok": bool, "error": str}]. No server is started.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys


def _vllm_parser() -> argparse.ArgumentParser:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def _sglang_parser() -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return parser


def main() -> int:
    request = json.load(sys.stdin)
    parser = {"vllm": _vllm_parser, "sglang": _sglang_parser}[request["engine"]]()
    results = []
    for case in request["cases"]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                parser.parse_args(case["args"])
            results.append({"id": case["id"], "ok": True, "error": ""})
        except SystemExit:
            lines = err.getvalue().strip().splitlines() or ["exit"]
            results.append({"id": case["id"], "ok": False, "error": lines[-1]})
    print(json.dumps(results))  # the last line: imports may print before it
    return 0


if __name__ == "__main__":
    sys.exit(main())
