"""A fleet's promotions: `apply --fleet` on N simulator processes (issue 12), measured as the
baseline (bench/fleet_baseline.py) is, so the two sit side by side.

    python -m bench --only fleet                       # 5 and 20 replicas, 25 promotions each
    python -m bench.fleet_rollout --replicas 5 --promotions 20   # the same, printed only

Each promotion is the downtime part's: versions [a, b] (stable a, canary b) become [b, c]
(stable b, canary c), so every replica loads a version (prepare, in waves: canary 1, then 25 %
of the fleet at a time), moves two labels (the flip, pushed to all at once) and unloads one
(cleanup). Figures per fleet size:

- commit-to-live: from the desired-state file written to `apply --fleet` done (every replica
  flipped and cleaned up), and to the last replica's move of `stable` (its event log);
- the flip window: from the first replica's move of `stable` to the last one's, from the
  simulators' event logs (`--sim_event_log`, `reconciler.testing.label_window`);
- failed requests: two clients sending predict by label `stable` through nginx (round robin
  over every replica, `reconciler.testing.balancer`) all along.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import EXAMPLE_MODELS, Section, median, ms, table
from bench.fleet_baseline import LABEL, MODEL, Load
from reconciler.testing import SimulatorProcess
from reconciler.testing.balancer import Balancer
from reconciler.testing.label_window import (
    disagreement_windows,
    percentile,
    read_event_log,
    unavailable_label_spans,
)

PROMOTIONS = {5: 25, 20: 25}  # 50 in all
QUICK_PROMOTIONS = {5: 2}
CYCLE = {1: 2, 2: 3, 3: 1}
TARGET_P99 = 0.050  # the flip window across 20 replicas


def desired(versions: list[int], stable: int, canary: int) -> str:
    return (
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n"
        f"    versions: [{', '.join(map(str, sorted(versions)))}]\n"
        f"    labels: {{stable: {stable}, canary: {canary}}}\n"
    )


@dataclass(frozen=True)
class Fleet:
    root: Path
    sims: dict[str, SimulatorProcess]
    logs: dict[str, Path]


@contextlib.contextmanager
def fleet(root: Path, size: int) -> Iterator[Fleet]:
    shutil.copytree(EXAMPLE_MODELS, root / "models")
    (root / "desired").mkdir()
    (root / "desired" / "animals.yaml").write_text(desired([1, 2], 1, 2))
    with contextlib.ExitStack() as stack:
        sims: dict[str, SimulatorProcess] = {}
        logs: dict[str, Path] = {}
        for i in range(size):
            name = f"tfs-{i:02d}"
            config = root / "replicas" / name / "models.config"
            config.parent.mkdir(parents=True)
            shutil.copy(root / "models" / "models.config", config)
            logs[name] = root / "replicas" / name / "events.jsonl"
            # Loads take 50 ms: the simulator's reload that adds a model can miss a load that
            # ends within the same step (reported; a real load always takes longer).
            sims[name] = stack.enter_context(
                SimulatorProcess(
                    root / "models",
                    config,
                    file_system_poll_seconds=0.2,
                    load_seconds=0.05,
                    extra_args=[f"--sim_event_log={logs[name]}"],
                )
            )
        rows = "\n".join(
            f"    - {{name: {n}, rest: '{s.rest_url}', grpc: '{s.grpc_target}',"
            f" config: replicas/{n}/models.config}}"
            for n, s in sims.items()
        )
        (root / "fleet.yaml").write_text(
            "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
            f"{rows}\n  rollout: {{canary: 1, max_parallel: 25%}}\n"
        )
        yield Fleet(root, sims, logs)


def apply(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--fleet", "fleet.yaml",
         "--desired", "desired", "--models-dir", "models", "--reload", "grpc",
         "--file-system-poll-seconds", "0.2"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Row:
    replicas: int
    done: tuple[float, ...]  # commit to `apply --fleet` done, seconds
    live: tuple[float, ...]  # commit to the last replica's move of `stable`
    windows: tuple[float, ...]  # first replica's move of `stable` to the last one's
    requests: int
    failed: int
    failures: str
    unavailable_spans: int
    load: tuple[float, float]  # load average (1 min) before and after


def measure(size: int, promotions: int) -> Row:
    load_before = os.getloadavg()[0]
    done: list[float] = []
    commits: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder,
        fleet(Path(folder), size) as the_fleet,
    ):
        root = the_fleet.root
        first = apply(root)  # from the lab's config to [1, 2], stable 1, canary 2
        assert first.returncode == 0, first.stdout + first.stderr
        upstreams = [f"127.0.0.1:{s.rest_port}" for s in the_fleet.sims.values()]
        with Balancer(upstreams, timeout=5.0) as balancer, Load(balancer.url).running() as load:
            started = time.time()
            canary = 2
            for _ in range(promotions):
                new = CYCLE[canary]
                commits.append(time.time())
                (root / "desired" / "animals.yaml").write_text(desired([canary, new], canary, new))
                result = apply(root)
                assert result.returncode == 0, result.stdout + result.stderr
                done.append(time.time() - commits[-1])
                canary = new
            time.sleep(0.2)  # requests during the last promotion's tail
        events = {name: read_event_log(log) for name, log in the_fleet.logs.items()}
    windows = [w for w in disagreement_windows(events, MODEL, LABEL) if w.start >= started]
    assert len(windows) == promotions, (len(windows), promotions)
    spans = [
        span
        for name, replica_events in events.items()
        for span in unavailable_label_spans(name, replica_events, MODEL, LABEL)
        if span.start >= started
    ]
    failed = sum(load.failed.values())
    return Row(
        replicas=size,
        done=tuple(done),
        live=tuple(w.end - commit for w, commit in zip(windows, commits, strict=True)),
        windows=tuple(w.seconds for w in windows),
        requests=load.ok + failed,
        failed=failed,
        failures=", ".join(f"{n}x {why}" for why, n in load.failed.most_common()),
        unavailable_spans=len(spans),
        load=(load_before, os.getloadavg()[0]),
    )


HEADERS = [
    "replicas",
    "promotions",
    "commit-to-done median s",
    "max s",
    "commit-to-last-move median s",
    "window p50 ms",
    "p99 ms",
    "max ms",
    "min ms",
    "requests",
    "failed",
    "label spans not AVAILABLE",
    "load avg before / after",
]


def cells(r: Row) -> list[object]:
    return [
        r.replicas,
        len(r.windows),
        f"{median(r.done):.2f}",
        f"{max(r.done):.2f}",
        f"{median(r.live):.2f}",
        ms(percentile(r.windows, 50)),
        ms(percentile(r.windows, 99)),
        ms(max(r.windows)),
        ms(min(r.windows)),
        r.requests,
        r.failed,
        r.unavailable_spans,
        f"{r.load[0]:.1f} / {r.load[1]:.1f}",
    ]


def measure_all(plan: dict[int, int]) -> dict[int, Row]:
    rows: dict[int, Row] = {}
    for replicas, promotions in plan.items():
        row = rows[replicas] = measure(replicas, promotions)
        print(
            f"  {replicas} replicas: commit-to-done {median(row.done):.2f} s, window "
            f"p50 {ms(percentile(row.windows, 50))} ms, p99 {ms(percentile(row.windows, 99))} "
            f"ms, failed {row.failed} of {row.requests}, load {row.load[0]:.1f}",
            flush=True,
        )
    return rows


def run(section: Section, quick: bool) -> dict[int, Row]:
    plan = QUICK_PROMOTIONS if quick else PROMOTIONS
    section.add(
        "Promotions by `tfs-reconciler apply --fleet` (gRPC pushes) on N simulator replicas, "
        "each with its own models.config and event log (`--sim_event_log`); loads take 50 ms. "
        "Each promotion moves [a, b] (stable a, canary b) to [b, c] (stable b, canary c): "
        "prepare in waves (canary 1, then 25 %), the flip pushed to all replicas at once "
        "through a gate, then cleanup. Commit-to-done: from the desired-state file written to "
        "`apply --fleet` done; commit-to-last-move: to the last replica's move of `stable` in "
        "the event logs. Window: from the first replica's move of `stable` to the last one's "
        "(event logs, percentiles interpolated), as in the baseline. Requests: two clients, "
        "keep-alive, predict by label `stable` through nginx (round robin over every replica) "
        f"all along. Promotions: {', '.join(f'{p} on {n}' for n, p in plan.items())}. "
        "Command: `python -m bench --only fleet`."
    )
    rows = measure_all(plan)
    section.add(table(HEADERS, [cells(r) for r in rows.values()]))
    for row in rows.values():
        if row.failures:
            section.add(f"{row.replicas} replicas, failed requests: {row.failures}")
    failed = sum(r.failed for r in rows.values())
    promoted = sum(len(r.windows) for r in rows.values())
    section.verdict(
        f"failed requests through the balancer over {promoted} fleet promotions: 0",
        f"{failed}",
        failed == 0,
    )
    if 20 in rows:
        p99 = percentile(rows[20].windows, 99)
        section.verdict(
            "label-disagreement window across 20 replicas, p99 < 50 ms",
            f"{ms(p99)} ms (load {rows[20].load[0]:.1f})",
            p99 < TARGET_P99,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=list(PROMOTIONS))
    parser.add_argument("--promotions", type=int, default=5)
    args = parser.parse_args()
    from reconciler import logs

    logs.configure("warning")
    rows = measure_all({size: args.promotions for size in args.replicas})
    print(table(HEADERS, [cells(r) for r in rows.values()]))


if __name__ == "__main__":
    main()
