"""Bench results as JSON, a Markdown table and PNG plots (TTFT p90 and throughput vs rate)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from llmd.bench.stats import StageSummary

__all__ = ["markdown_table", "plot", "write_json"]

_COLUMNS = (
    ("system", "system", "{}"),
    ("stage", "stage", "{}"),
    ("req/s", "requests_per_s", "{:.2f}"),
    ("out tok/s", "output_tokens_per_s", "{:.0f}"),
    ("hit share", "cache_hit_share", "{:.1%}"),
    ("TTFT p50 ms", "ttft_p50_s", "ms"),
    ("TTFT p90 ms", "ttft_p90_s", "ms"),
    ("TTFT p99 ms", "ttft_p99_s", "ms"),
    ("ITL p50 ms", "itl_p50_s", "ms"),
    ("ITL p90 ms", "itl_p90_s", "ms"),
    ("E2E p90 ms", "e2e_p90_s", "ms"),
    ("errors", "errors", "{}"),
)


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "–"
    if fmt == "ms":
        return f"{float(value) * 1000:.1f}"  # type: ignore[arg-type]
    return fmt.format(value)


def markdown_table(rows: Sequence[StageSummary]) -> str:
    head = "| " + " | ".join(c[0] for c in _COLUMNS) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(_COLUMNS))) + "|"
    body = ["| " + " | ".join(_cell(getattr(r, attr), fmt) for _, attr, fmt in _COLUMNS) + " |"
            for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def write_json(rows: Sequence[StageSummary], path: Path, meta: dict[str, object]) -> None:
    path.write_text(json.dumps({"meta": meta, "stages": [r.to_dict() for r in rows]}, indent=2))


def plot(rows: Sequence[StageSummary], path: Path, title: str) -> None:
    """Two panels, one line per system: TTFT p90 and output tokens/s against offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: dict[str, list[StageSummary]] = {}
    for r in rows:
        if r.offered is not None:
            systems.setdefault(r.system, []).append(r)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.get_cmap("tab20")  # 20 distinct colors: no two systems share one
    for i, (name, stages) in enumerate(systems.items()):
        stages = sorted(stages, key=lambda s: s.offered or 0)
        rates = [s.offered for s in stages]
        style = {"marker": "os^D"[i // 10 % 4], "color": colors(i * 2 % 20 + i // 10 % 2),
                 "label": name}
        ax1.plot(rates, [(s.ttft_p90_s or float("nan")) * 1000 for s in stages], **style)
        ax2.plot(rates, [s.output_tokens_per_s for s in stages], **style)
    ax1.set(xlabel="offered rate (req/s)", ylabel="TTFT p90 (ms)", title="TTFT p90")
    ax1.set_yscale("log")
    ax2.set(xlabel="offered rate (req/s)", ylabel="output tokens/s", title="Throughput")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
