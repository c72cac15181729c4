"""Shared helpers: statistics, timing, tables, machine description, generated model trees."""

from __future__ import annotations

import bisect
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODELS = ROOT / "examples" / "models"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    """Wall times (perf_counter, seconds) of `repeat` calls."""
    return [wall for wall, _ in timed_both(function, repeat)]


def timed_both(function: Callable[[], object], repeat: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of `repeat` calls: perf_counter and this process's CPU time, which
    other work on a busy box inflates far less than the wall clock."""
    times = []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        function()
        times.append((time.perf_counter() - started, time.process_time() - cpu))
    return times


def growth_exponent(sizes: Sequence[float], times: Sequence[float]) -> float:
    """Least-squares slope of log(time) on log(size): 1 is linear, 2 quadratic."""
    points = [(math.log(s), math.log(t)) for s, t in zip(sizes, times, strict=True) if t > 0]
    if len(points) < 2:
        return math.nan
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den if den else math.nan


def outages(good: Sequence[float], failed: Sequence[float]) -> list[tuple[float, float]]:
    """The outages one client saw, as (start, end) times: from its last good answer before a
    failed request to its next good answer, one per run of failures.

    ``good`` and ``failed`` are the times the client got each answer (or failure). Summing
    only the runs of failures would miss the time before the first failure is seen and after
    the last one (a client that pauses after a failure misses the most). Without a good
    answer before (after) a run, the outage starts (ends) at its first (last) failure.
    """
    ordered = sorted(good)
    found: set[tuple[float, float]] = set()
    runs: dict[int, list[float]] = {}
    for moment in failed:
        runs.setdefault(bisect.bisect_left(ordered, moment), []).append(moment)
    for index, moments in runs.items():
        start = ordered[index - 1] if index > 0 else min(moments)
        end = ordered[index] if index < len(ordered) else max(moments)
        found.add((start, end))
    return sorted(found)


def merged(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping (start, end) intervals joined: several clients' outages, counted once."""
    joined: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
    return joined


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


@dataclass
class Section:
    """One part's report: a title, Markdown body, and target verdicts."""

    title: str
    body: list[str] = field(default_factory=list)
    verdicts: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def add(self, text: str) -> None:
        print(text, flush=True)
        self.body.append(text)

    def verdict(self, target: str, figure: str, met: bool | None) -> None:
        self.verdicts.append((target, figure, met))
        word = {True: "MET", False: "MISSED", None: "NOT RUN"}[met]
        print(f"  target {target}: {figure} -> {word}", flush=True)

    def markdown(self) -> str:
        return "\n\n".join([f"## {self.title}", *self.body])


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({affinity} usable by this process)",
        "memory": memory,
        "Python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "OS": f"{platform.system()} {platform.release()}",
    }


def write_saved_model_tree(root: Path, models: int, versions: int = 5) -> Path:
    """`models` model folders under `root`, each with `versions` version folders holding a
    tiny (non-empty) saved_model.pb: enough for the reconciler's disk scan."""
    root.mkdir(parents=True, exist_ok=True)
    for m in range(models):
        for v in range(1, versions + 1):
            folder = root / model_name(m) / str(v)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "saved_model.pb").write_bytes(b"\n\x00")
    return root


def model_name(index: int) -> str:
    return f"model-{index:05d}"
