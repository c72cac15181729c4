"""Cost: the idle daemon's CPU and its peak RSS while watching 1,000 models.

1,000 models x 5 versions x 3 labels on disk (each version folder's files symlinked to the
example SavedModel), served by the simulator; the daemon (`run --git --reload grpc`) starts,
converges (in sync already), then sits idle. CPU is utime+stime from /proc/<pid>/stat over
the window; peak RSS is VmHWM from /proc/<pid>/status at the end.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

from bench.common import Section, median, model_name, ms, table
from bench.lab import (
    Daemon,
    Lab,
    daemon_available,
    desired_yaml,
    lab,
    outcomes,
    wait_until,
)
from reconciler.testing import SimulatorProcess
from reconciler.testing.lab import label_version

MODELS = 1_000
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def memory_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0


def pass_seconds(log: str) -> list[float]:
    """The `seconds` of each reconcile pass the daemon logged (JSON lines)."""
    found = []
    for line in log.splitlines():
        if '"reconciled"' in line:
            match = re.search(r'"seconds": ([0-9.]+)', line)
            if match:
                found.append(float(match.group(1)))
    return found


def desired_for(models: int, stable: dict[int, int] | None = None) -> str:
    stable = stable or {}
    return desired_yaml(
        {
            model_name(i): (
                [1, 2, 3, 4, 5],
                {"deprecated": 3, "stable": stable.get(i, 4), "canary": 5},
            )
            for i in range(models)
        }
    )


def idle(models: int, window: float, resync: str | None, moves: int = 0) -> dict[str, float]:
    """Idle CPU and memory; then `moves` label moves on the first model, timed commit-to-live
    (what a change costs when the daemon serves many models)."""
    extra = [f"--resync={resync}"] if resync is not None else []
    with (
        lab(desired_for(models), git_repo=True, models=models) as the_lab,
        SimulatorProcess(
            the_lab.models_dir, file_system_poll_seconds=30.0, startup_timeout=600
        ) as tfs,
    ):
        started = time.perf_counter()
        with Daemon(the_lab, tfs.rest_url, tfs.grpc_target, "--git", "--reload=grpc",
                    *extra).start(timeout=600) as daemon:  # fmt: skip
            ready = time.perf_counter() - started
            time.sleep(1.0)  # let the pass that its own history write triggered finish
            before, clock = cpu_seconds(daemon.pid), time.perf_counter()
            time.sleep(window)
            used, wall = cpu_seconds(daemon.pid) - before, time.perf_counter() - clock
            hwm, rss = (
                memory_kib(daemon.pid, "VmHWM") / 1024,
                memory_kib(daemon.pid, "VmRSS") / 1024,
            )
            passes = pass_seconds(daemon.log())
            overflows = daemon.log().count("Inotify queue overflowed; filesystem events")
            latencies = []
            for number in range(moves):
                latency = _move(the_lab, tfs.rest_url, models, 3 if number % 2 == 0 else 4)
                if latency is not None:
                    latencies.append(latency)
            return {
                "ready": ready,
                "cpu": used / wall,
                "hwm": hwm,
                "rss": rss,
                "window": wall,
                "passes": len(passes),
                "overflows": overflows,
                "pass_seconds": max(passes, default=0.0),
                "move_median": median(latencies) if latencies else math.nan,
                "move_max": max(latencies, default=math.nan),
                "moves": len(latencies),
            }


def _move(the_lab: Lab, rest_url: str, models: int, stable: int) -> float | None:
    """Commit `stable` for the first model; seconds until TFS resolves it (None: 120 s)."""
    records = len(outcomes(the_lab.state_dir))
    first = model_name(0)
    began = time.perf_counter()
    the_lab.commit(desired_for(models, {0: stable}), f"stable {stable}")
    seen = wait_until(lambda: label_version(rest_url, first, "stable") == stable, 120, 0.02)
    wait_until(lambda: len(outcomes(the_lab.state_dir)) > records, 120, 0.05)
    return None if seen is None else seen - began


def run(section: Section, quick: bool) -> dict[str, dict[str, float]]:
    if not daemon_available():
        section.add("Not run: this build has no `tfs-reconciler run`.")
        section.verdict("idle CPU < 1 % of a core", "no daemon", None)
        section.verdict("peak RSS < 60 MB", "no daemon", None)
        return {}
    models = 100 if quick else MODELS
    window = 5.0 if quick else 60.0
    results = {}
    label = "default (resync 30 s)"
    results[label] = idle(models, window, None, moves=0 if quick else 3)
    r = results[label]
    print(f"  {label}: {r['cpu'] * 100:.2f} % CPU over {r['window']:.0f} s, "
          f"VmHWM {r['hwm']:.1f} MiB, ready in {r['ready']:.1f} s", flush=True)  # fmt: skip
    rows = [
        [label, f"{r['window']:.0f}", f"{r['cpu'] * 100:.2f}", f"{r['hwm']:.1f}",
         f"{r['rss']:.1f}", f"{r['ready']:.1f}", f"{r['pass_seconds']:.1f}",
         f"{r['overflows']:.0f}"]
        for label, r in results.items()
    ]  # fmt: skip
    section.add(
        f"`tfs-reconciler run --git --reload grpc` watching {models:,} models x 5 versions x 3 "
        "labels (simulator, in sync), idle: no commits, no folder changes.\n\n"
        + table(
            [
                "daemon settings",
                "window s",
                "CPU % of one core",
                "peak RSS (VmHWM) MiB",
                "RSS at end MiB",
                "start to ready s",
                "longest pass s",
                "inotify overflows logged",
            ],
            rows,
        )
    )
    if r["moves"]:
        section.add(
            f"Commit-to-live with {models:,} models (a label move on one model, daemon grpc, "
            f"{r['moves']:.0f} commits after the idle window): median {ms(r['move_median'])} ms, "
            f"max {ms(r['move_max'])} ms (no target at this size; the example's is 300 ms)."
        )
    first = next(iter(results.values()))
    section.verdict(f"idle CPU < 1 % of a core ({models:,} models)", f"{first['cpu'] * 100:.2f} %",
                    first["cpu"] < 0.01)  # fmt: skip
    section.verdict(f"peak RSS < 60 MB ({models:,} models)", f"{first['hwm']:.1f} MiB",
                    first["hwm"] < 60 * 1e6 / 2**20)  # fmt: skip
    return results
