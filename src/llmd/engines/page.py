"""A parsed Prometheus text page, restricted to the metric families a caller needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from llmd.errors import EngineError

__all__ = ["MetricsPage"]

Labels = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class MetricsPage:
    """Samples by sample name (`vllm:prefix_cache_hits_total`), each a list of (labels, value)."""

    samples: Mapping[str, list[tuple[Labels, float]]]

    @classmethod
    def parse(cls, text: str, families: Iterable[str] | None = None) -> MetricsPage:
        """Parse `text` with prometheus-client's parser.

        With `families`, only lines of those families reach the parser: a real engine page
        has hundreds of series and the EPP scrapes every 50 ms, so parsing what is never read
        would dominate its CPU.
        """
        if families is not None:
            text = _select(text, tuple(families))
        samples: dict[str, list[tuple[Labels, float]]] = {}
        try:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    samples.setdefault(s.name, []).append((s.labels, float(s.value)))
        except (ValueError, TypeError, IndexError) as exc:
            raise EngineError(f"unparseable metrics page: {exc}") from exc
        return cls(samples)

    def has(self, name: str) -> bool:
        return name in self.samples

    def total(self, name: str, match: Iterable[tuple[str, str]] = ()) -> float | None:
        """Sum over every series of `name` whose labels include `match`; None if absent."""
        rows = self.samples.get(name)
        if rows is None:
            return None
        want = tuple(match)
        picked = [v for labels, v in rows if all(labels.get(k) == val for k, val in want)]
        return sum(picked) if picked else None

    def mean(self, name: str) -> float | None:
        """Mean over every series of `name` (ratios from several engine ranks); None if absent."""
        rows = self.samples.get(name)
        if not rows:
            return None
        return sum(v for _, v in rows) / len(rows)

    def labels(self, name: str) -> Labels | None:
        """The label set of the first series of `name` (info-style metrics)."""
        rows = self.samples.get(name)
        return rows[0][0] if rows else None


def _select(text: str, families: tuple[str, ...]) -> str:
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[2].startswith(families):
                keep.append(line)
        elif line.startswith(families):
            keep.append(line)
    return "\n".join(keep) + "\n"
