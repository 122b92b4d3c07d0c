"""Figures and tables: the target rows every stage returns, percentiles, the machine, markdown tables.

A :class:`Row` is one target of the issue: the baseline figure measured in
the same run, our figure, their ratio, the target and whether it is met.
Targets that are absolute (a latency, a byte count) still show the ratio to
their baseline, for context; the verdict then compares our figure alone.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    stage: str
    measure: str
    baseline: str
    ours: str
    ratio: float | None
    target: str
    meets: bool | None  # None: no target (a sizing figure), or nothing was measured (skipped, failed)

    @property
    def verdict(self) -> str:
        return {True: "meets", False: "misses", None: "n/a"}[self.meets]

    def cells(self) -> list[str]:
        ratio = "—" if self.ratio is None or math.isnan(self.ratio) else f"{self.ratio:.2f}"
        return [self.stage, self.measure, self.baseline, self.ours, ratio, self.target, self.verdict]


ROW_HEADERS = ["stage", "measure", "baseline", "ours", "ratio", "target", "verdict"]


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline else math.nan


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100), interpolated between the closest ranks (p50 is the median); NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table with padded columns."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) if cells else len(header) for i, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths)) + " |"

    return "\n".join([line(headers), line(["-" * width for width in widths]), *(line(row) for row in cells)])


def heading(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> list[tuple[str, str]]:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu_model()),
        ("Python", sys.version.split()[0] + f" ({platform.python_implementation()})"),
        ("platform", platform.platform()),
        ("load average at start", load),
    ]
