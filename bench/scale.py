"""Scale: parse+validate, plan+render, models.config parse and disk scan for N models.

Each model has 5 versions (a specific policy [1..5]) and 3 labels (deprecated 3, stable 4,
canary 5). The desired state is generated YAML, 250 models a file (a file is capped at 1 MiB),
read through `parse_documents`. Plan+render is the work one commit does: the current
models.config is the desired one with one label of one model elsewhere (stable on 3), so the
plan is one label move; it is planned against the scanned disk and every phase rendered.
The disk tree is real (5 version folders a model, each with a tiny saved_model.pb) in a
temporary folder; scans are timed warm (the tree is scanned once before timing).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Section,
    growth_exponent,
    median,
    model_name,
    ms,
    table,
    timed_both,
    write_saved_model_tree,
)
from reconciler.desired import DesiredState, parse_documents
from reconciler.observe import DiskState, Observed, scan_disk
from reconciler.plan import plan
from reconciler.tfs_config import ServingConfig, parse_config, render_config

MODELS_PER_FILE = 250
SERVING_ROOT = "/models"
STAGES = ("parse+validate", "plan+render", "models.config parse", "disk scan")


def desired_documents(models: int, stable: dict[int, int] | None = None) -> list[tuple[str, bytes]]:
    """Generated desired-state YAML files for `models` models (stable on 4 unless overridden)."""
    stable = stable or {}
    documents = []
    for start in range(0, models, MODELS_PER_FILE):
        lines = ["apiVersion: tfs-reconciler/v1", "models:"]
        for index in range(start, min(models, start + MODELS_PER_FILE)):
            lines += [
                f"  {model_name(index)}:",
                "    versions: [1, 2, 3, 4, 5]",
                f"    labels: {{deprecated: 3, stable: {stable.get(index, 4)}, canary: 5}}",
            ]
        documents.append(
            (
                f"desired/models-{start // MODELS_PER_FILE:03d}.yaml",
                ("\n".join(lines) + "\n").encode(),
            )
        )
    return documents


@dataclass
class Workload:
    models: int
    documents: list[tuple[str, bytes]]
    desired: DesiredState
    disk: DiskState
    current: ServingConfig
    current_text: str
    models_dir: Path
    base_paths: dict[str, str]

    def parse(self) -> DesiredState:
        return parse_documents(self.documents, SERVING_ROOT)

    def parse_config(self) -> ServingConfig:
        parse_config.cache_clear()  # the cost of a changed file, not of the cache's hit
        return parse_config(self.current_text)

    def plan_and_render(self) -> int:
        result = plan(self.desired, Observed(self.disk, self.current))
        assert not result.problems, result.problems[:3]
        assert len(result.phases) == 1, len(result.phases)
        return sum(len(render_config(phase)) for phase in result.phases)

    def scan(self) -> DiskState:
        return scan_disk(self.base_paths, SERVING_ROOT, self.models_dir)


def workload(models: int, folder: Path) -> Workload:
    models_dir = write_saved_model_tree(folder / "models", models)
    documents = desired_documents(models)
    desired = parse_documents(documents, SERVING_ROOT)
    base_paths = {m.name: m.base_path for m in desired.models}
    disk = scan_disk(base_paths, SERVING_ROOT, models_dir)
    before = parse_documents(desired_documents(models, {0: 3}), SERVING_ROOT)
    current = plan(before, Observed(disk, None)).target
    return Workload(
        models, documents, desired, disk, current, render_config(current), models_dir, base_paths
    )


def repetitions(models: int, quick: bool) -> int:
    if models >= 10_000:
        return 3
    if models >= 1_000:
        return 3 if quick else 7
    return 5 if quick else 15


def measure(
    sizes: Sequence[int], quick: bool
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Median wall and CPU seconds per stage and size."""
    results: dict[str, dict[int, float]] = {stage: {} for stage in STAGES}
    cpu: dict[str, dict[int, float]] = {stage: {} for stage in STAGES}
    for models in sizes:
        with tempfile.TemporaryDirectory(prefix="tfs-bench-scale-") as temp:
            load = workload(models, Path(temp))
            reps = repetitions(models, quick)
            stages: dict[str, Callable[[], object]] = {
                "parse+validate": load.parse,
                "plan+render": load.plan_and_render,
                "models.config parse": load.parse_config,
                "disk scan": load.scan,
            }
            for stage, function in stages.items():
                if models < 10_000:  # (10,000: seconds a call, warm enough after one)
                    function()  # warm up (imports, caches, page cache)
                times = timed_both(function, reps)
                results[stage][models] = median([wall for wall, _ in times])
                cpu[stage][models] = median([used for _, used in times])
            print(
                f"  {models:>6} models: "
                + ", ".join(f"{s} {ms(results[s][models])} ms" for s in STAGES),
                flush=True,
            )
    return results, cpu


def run(section: Section, quick: bool, sizes: Sequence[int] | None = None) -> dict[str, object]:
    sizes = list(sizes or ((1, 100, 1_000) if quick else (1, 100, 1_000, 10_000)))
    results, cpu = measure(sizes, quick)
    fit_sizes = [s for s in sizes if s >= 100] or sizes
    rows = []
    exponents, cpu_exponents = {}, {}
    for stage in STAGES:
        exponent = growth_exponent(fit_sizes, [results[stage][s] for s in fit_sizes])
        cpu_exponent = growth_exponent(fit_sizes, [cpu[stage][s] for s in fit_sizes])
        exponents[stage], cpu_exponents[stage] = exponent, cpu_exponent
        rows.append(
            [stage, *(f"{ms(results[stage][s])} ({ms(cpu[stage][s])})" for s in sizes),
             f"{exponent:.2f} ({cpu_exponent:.2f})"]
        )  # fmt: skip
    headers = [
        "stage: median wall ms (CPU ms)",
        *(f"{s:,} models" for s in sizes),
        "growth exponent wall (CPU)",
    ]
    section.add(
        "Each model: 5 versions, 3 labels. Median of several runs: wall clock "
        "(`time.perf_counter`) and, in brackets, this process's CPU time "
        "(`time.process_time`, less inflated by other work on a busy box). "
        "Growth exponent: least-squares slope of log(time) on log(models) over the sizes "
        f"from 100 up ({', '.join(f'{s:,}' for s in fit_sizes)}); 1.0 is linear.\n\n"
        + table(headers, rows)
    )
    total = {s: sum(cpu[stage][s] for stage in STAGES) for s in sizes}
    section.add(
        "The four stages together (the CPU one daemon pass spends before talking to TFS): "
        + ", ".join(f"{s:,} models {ms(total[s])} ms" for s in sizes)
        + "."
    )
    for stage in ("plan+render", "disk scan"):
        for size, limit in ((1_000, 0.1), (10_000, 1.0)):
            if size in sizes:
                wall, used = results[stage][size], cpu[stage][size]
                section.verdict(
                    f"{stage}, {size:,} models < {ms(limit)} ms",
                    f"{ms(wall)} ms wall ({ms(used)} ms CPU)",
                    wall < limit,
                )
    worst = max(cpu_exponents.values())
    section.verdict(
        "growth linear (CPU-time exponent <= 1.2)",
        f"max exponent {worst:.2f} ({max(cpu_exponents, key=cpu_exponents.__getitem__)})",
        worst <= 1.2,
    )
    return {"results": results, "cpu": cpu, "exponents": exponents}
