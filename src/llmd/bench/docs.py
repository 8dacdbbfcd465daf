"""docs/benchmarks.md sections from the saved results of `llmd bench compare`, `overhead` and
`crosscheck` (`llmd bench report`): tables, the plot, target verdicts computed from the numbers.

Only the three sections this module owns are replaced (`## Router comparison`, `## Router
overhead`, `## inference-perf cross-check`); every other section of the file is left alone.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from llmd.bench.compare import sustained_rate
from llmd.bench.report import markdown_table
from llmd.bench.stats import StageSummary

__all__ = ["SECTIONS", "machine", "replace_section", "write_report"]

SECTIONS = ("## Router comparison", "## Router overhead", "## inference-perf cross-check")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024 / 1024:.1f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
            f"load average when the report was written: {load}")


def replace_section(path: Path, heading: str, body: str) -> None:
    """Replace `heading`'s section (up to the next `## `) with `body`, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{heading}\n\n{body.strip()}\n"
    if heading + "\n" in text:
        start = text.index(heading + "\n")
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + block + (text[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.1f} ms"


def _rate(rate: float | None) -> str:
    return "no stage" if rate is None else f"{rate:g} req/s"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def compare_targets(data: dict[str, Any], overhead: dict[str, Any] | None,
                    fraction: float) -> tuple[str, dict[str, Any]]:
    """The targets table and the numbers the reading quotes."""
    stages = [StageSummary(**s) for s in data["stages"]]
    by_sys: dict[str, list[StageSummary]] = {}
    for s in stages:
        by_sys.setdefault(s.system, []).append(s)
    llmd = {k: v for k, v in by_sys.items() if k.startswith("llmd-")}
    peers = {k: v for k, v in by_sys.items() if not k.startswith("llmd-")}
    rate = sustained_rate(by_sys.get("llmd-default", []), fraction)
    facts: dict[str, Any] = {"rate": rate}
    if rate is None:
        return "llmd-default did not sustain even the lowest rate without errors.\n", facts

    def at(group: dict[str, list[StageSummary]], clean: bool) -> dict[str, StageSummary]:
        found = {k: next((s for s in v if s.offered == rate), None) for k, v in group.items()}
        return {k: s for k, s in found.items() if s is not None and not (clean and s.errors)}

    llmd_at = at(llmd, clean=True)
    best_name = min(llmd_at, key=lambda k: llmd_at[k].ttft_p90_s or 1e9)
    best = llmd_at[best_name]
    peer_at = at(peers, clean=False)
    ttft_best_peer = min(peer_at, key=lambda k: peer_at[k].ttft_p90_s or 1e9, default=None)
    tput_best_peer = max(peer_at, key=lambda k: peer_at[k].output_tokens_per_s, default=None)
    oracle = data["meta"]["oracle"].get(f"rate={rate:g}", {}).get("share")
    facts.update(best=best_name, best_ttft=best.ttft_p90_s, best_tput=best.output_tokens_per_s,
                 peer_ttft=ttft_best_peer, oracle=oracle)
    rows = []
    if ttft_best_peer:
        p = peer_at[ttft_best_peer]
        ok = (best.ttft_p90_s or 1e9) < (p.ttft_p90_s or 1e9)
        rows.append(f"| lowest TTFT p90 at {rate:g} req/s | {best_name}: {_ms(best.ttft_p90_s)} "
                    f"| best peer {ttft_best_peer}: {_ms(p.ttft_p90_s)} | {_verdict(ok)} |")
    if tput_best_peer:
        p = peer_at[tput_best_peer]
        ok = best.output_tokens_per_s >= p.output_tokens_per_s
        diff = best.output_tokens_per_s / p.output_tokens_per_s - 1 if p.output_tokens_per_s else 0
        rows.append(f"| highest output tok/s at {rate:g} req/s | {best_name}: "
                    f"{best.output_tokens_per_s:.0f} ({diff:+.1%}) | best peer {tput_best_peer}: "
                    f"{p.output_tokens_per_s:.0f} | {_verdict(ok)} |")
    if oracle:
        for name in dict.fromkeys([best_name, "llmd-default"]):
            if name in llmd_at:
                share = llmd_at[name].cache_hit_share
                rows.append(f"| cache-hit share >= 90% of the oracle's | {name}: {share:.1%} = "
                            f"{share / oracle:.0%} of the oracle | oracle: {oracle:.1%} | "
                            f"{_verdict(share / oracle >= 0.9)} |")
    for name in (PRECISE, PRECISE + "-speculative"):
        rows += _precise_rows(name, by_sys, data["meta"]["oracle"], rate, fraction, facts)
    if overhead:
        for c in sorted({cell["concurrency"] for cell in overhead["cells"]}):
            cells = [x for x in overhead["cells"] if x["concurrency"] == c
                     and x["added_mean_ms"] is not None]
            ours = next((x for x in cells if x["system"] == "llmd-default"), None)
            others = [x for x in cells if not x["system"].startswith("llmd")
                      and x["system"] != "envoy-rr"]
            if ours and others:
                fast = min(others, key=lambda x: x["added_mean_ms"])
                bound = max(fast["added_mean_ms"], 0.0) * 1.5
                rows.append(f"| routing overhead within 1.5x of the fastest peer (concurrency "
                            f"{c}) | llmd-default: +{ours['added_mean_ms']:.2f} ms | "
                            f"{fast['system']}: +{fast['added_mean_ms']:.2f} ms | "
                            f"{_verdict(ours['added_mean_ms'] <= bound)} |")
    head = "| target | llmd | reference | verdict |\n|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n\n" + _at_rate(by_sys, rate, oracle, fraction), facts


PRECISE = "llmd-precise"
PRECISE_HIT_TARGET = 0.98


def _precise_rows(name: str, by_sys: dict[str, list[StageSummary]], oracle: dict[str, Any],
                  rate: float, fraction: float, facts: dict[str, Any]) -> list[str]:
    """Issue 13's targets for a precise system `name`: its hit share >= 98% of the oracle's at
    every rate it sustains, and its TTFT p90 and output tokens/s better than llmd-autotune's
    and every peer's at llmd-default's top sustained rate `rate`."""
    stages = by_sys.get(name)
    if not stages:
        return []
    top = sustained_rate(stages, fraction)
    ratios = [(s.offered, s.cache_hit_share / oracle[f"rate={s.offered:g}"]["share"])
              for s in stages if s.offered is not None and top is not None
              and s.offered <= top and oracle.get(f"rate={s.offered:g}", {}).get("share")]
    rows = []
    if ratios:
        worst_rate, worst = min(ratios, key=lambda x: x[1])
        facts[name] = {"worst": worst, "worst_rate": worst_rate, "top": top}
        rows.append(f"| {name} cache-hit share >= {PRECISE_HIT_TARGET:.0%} of the oracle's "
                    f"at every rate it sustains (up to {_rate(top)}) | lowest: {worst:.1%} of "
                    f"the oracle at {worst_rate:g} req/s | every stage's oracle | "
                    f"{_verdict(worst >= PRECISE_HIT_TARGET)} |")
    ours = next((s for s in stages if s.offered == rate), None)
    rivals = {k: next((s for s in v if s.offered == rate), None) for k, v in by_sys.items()
              if k == "llmd-autotune" or not k.startswith("llmd-")}
    found = {k: s for k, s in rivals.items() if s is not None}
    if ours is None or not found:
        return rows
    ttft = min(found, key=lambda k: found[k].ttft_p90_s or 1e9)
    tput = max(found, key=lambda k: found[k].output_tokens_per_s)
    ok = not ours.errors and (ours.ttft_p90_s or 1e9) < (found[ttft].ttft_p90_s or 1e9)
    rows.append(f"| {name} TTFT p90 below llmd-autotune's and every peer's at {rate:g} "
                f"req/s | {_ms(ours.ttft_p90_s)} | best of them {ttft}: "
                f"{_ms(found[ttft].ttft_p90_s)} | {_verdict(ok)} |")
    ok = not ours.errors and ours.output_tokens_per_s > found[tput].output_tokens_per_s
    rows.append(f"| {name} output tok/s above llmd-autotune's and every peer's at {rate:g} "
                f"req/s | {ours.output_tokens_per_s:.0f} | best of them {tput}: "
                f"{found[tput].output_tokens_per_s:.0f} | {_verdict(ok)} |")
    return rows


RATIO_SYSTEMS = ("llmd-precise", "llmd-precise-speculative", "llmd-autotune", "llmd-default",
                 "llmd-v1-default", "sglang-cache_aware", "vllm-router-kv_aware")


def oracle_ratio_table(data: dict[str, Any]) -> str:
    """Each cache-aware system's hit share as a share of the oracle's, per stage."""
    oracle = data["meta"]["oracle"]
    stages = [StageSummary(**s) for s in data["stages"]]
    names = [n for n in RATIO_SYSTEMS if any(s.system == n for s in stages)]
    if not names or not oracle:
        return ""
    lines = ["Hit share as a share of the oracle's, per stage:\n",
             "| stage | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for stage, o in oracle.items():
        cells = []
        for name in names:
            s = next((x for x in stages if x.system == name and x.stage == stage), None)
            cells.append("–" if s is None or not o["share"]
                         else f"{s.cache_hit_share / o['share']:.1%}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def _at_rate(by_sys: dict[str, list[StageSummary]], rate: float, oracle: float | None,
             fraction: float) -> str:
    """Every system at llmd's sustained rate, and the highest rate each one sustains."""
    lines = [f"Every system at {rate:g} req/s, and the highest ladder rate each sustains:\n",
             "| system | sustains up to | TTFT p50 ms | TTFT p90 ms | output tok/s | hit share "
             "| of the oracle | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, stages in by_sys.items():
        s = next((x for x in stages if x.offered == rate), None)
        top = sustained_rate(stages, fraction)
        if s is None:
            continue
        of = f"{s.cache_hit_share / oracle:.0%}" if oracle else "–"
        p50 = "–" if s.ttft_p50_s is None else f"{s.ttft_p50_s * 1000:.1f}"
        p90 = "–" if s.ttft_p90_s is None else f"{s.ttft_p90_s * 1000:.1f}"
        lines.append(f"| {name} | {_rate(top)} | {p50} | {p90} | {s.output_tokens_per_s:.0f} | "
                     f"{s.cache_hit_share:.1%} | {of} | {s.errors} |")
    return "\n".join(lines) + "\n"


def write_report(results: Path, docs: Path, img_dir: Path, commands: dict[str, str],
                 readings: dict[str, str]) -> list[str]:
    """Write whichever sections have results; returns the headings written."""
    written = []
    cmp = _load(results / "compare" / "results.json")
    ovh = _load(results / "overhead" / "overhead.json")
    xc = _load(results / "crosscheck" / "crosscheck.json")
    if cmp is not None:
        cfg = cmp["meta"]["config"]
        png = results / "compare" / "ttft_throughput.png"
        img = ""
        if png.exists():
            img_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(png, img_dir / "router-comparison.png")
            rel = os.path.relpath(img_dir / "router-comparison.png", docs.parent)
            img = f"![TTFT p90 and output tokens/s against offered rate]({rel})\n\n"
        targets, facts = compare_targets(cmp, ovh, cfg["sustain_fraction"])
        ratios = oracle_ratio_table(cmp)
        oracle = "\n".join(f"| {k} | {v['share']:.1%} | {v['first_seen_share']:.1%} |"
                           for k, v in cmp["meta"]["oracle"].items())
        body = (f"Machine: {machine()}.\n\nCommand (part of `make bench`):\n\n```sh\n"
                f"{commands.get('compare', '')}\n```\n\n"
                f"{readings['compare_setup'].format(**cfg)}\n\n"
                f"### Results\n\n{img}{markdown_table([StageSummary(**s) for s in cmp['stages']])}"
                f"\nOracle hit share per stage (definition above):\n\n| stage | oracle | "
                f"infinite cache |\n|---|---:|---:|\n{oracle}\n\n{ratios}"
                + (f"Skipped: {cmp['meta']['skipped']}\n\n" if cmp["meta"]["skipped"] else "")
                + f"### Targets\n\nllmd-default sustains up to **{_rate(facts['rate'])}** on this "
                f"ladder (zero errors, and completions keep up with arrivals: req/s at least "
                f"{cfg['sustain_fraction']:.0%} of the stage's real Poisson arrival rate; the "
                f"ladder's top is {max(cfg['rates']):g} req/s). "
                f"llmd's best config there: **{facts.get('best', '–')}**.\n\n{targets}\n"
                f"### Reading\n\n{readings['compare']}\n")
        replace_section(docs, SECTIONS[0], body)
        written.append(SECTIONS[0])
    if ovh is not None:
        from llmd.bench.overhead import OverheadCell, OverheadConfig, OverheadResult, overhead_table

        res = OverheadResult(OverheadConfig(**ovh["config"]),
                             [OverheadCell(**c) for c in ovh["cells"]], ovh.get("skipped", {}))
        body = (f"Machine: {machine()}.\n\nCommand (part of `make bench`):\n\n```sh\n"
                f"{commands.get('overhead', '')}\n```\n\n{readings['overhead_setup']}\n\n"
                f"{overhead_table(res)}\n"
                + (f"Skipped: {res.skipped}\n\n" if res.skipped else "")
                + f"### Reading\n\n{readings['overhead']}\n")
        replace_section(docs, SECTIONS[1], body)
        written.append(SECTIONS[1])
    if xc is not None:
        from llmd.bench.crosscheck import CrossCheckRow, crosscheck_table

        rows = [CrossCheckRow(**r) for r in xc["rows"]]
        body = (f"Machine: {machine()}.\n\nCommand (part of `make bench`):\n\n```sh\n"
                f"{commands.get('crosscheck', '')}\n```\n\n"
                f"{readings['crosscheck_setup'].format(**xc['config'])}\n\n"
                f"{crosscheck_table(rows)}\n### Reading\n\n{readings['crosscheck']}\n")
        replace_section(docs, SECTIONS[2], body)
        written.append(SECTIONS[2])
    return written
