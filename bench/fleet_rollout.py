"""A fleet's promotions: `apply --fleet` on N simulator processes (issue 12).

    python -m bench.fleet_rollout                      # 5 and 20 replicas, 5 promotions each
    python -m bench.fleet_rollout --replicas 5 --promotions 20

Each promotion is the downtime part's: versions [a, b] (stable a, canary b) become [b, c]
(stable b, canary c), so every replica loads a version (prepare, in waves: canary 1, then 25 %
of the fleet at a time), moves two labels (the flip, pushed to all at once) and unloads one
(cleanup). Printed per fleet size:

- commit-to-live: from the desired-state file written to `apply --fleet` done (every replica
  flipped and cleaned up), and to the last replica's flip push;
- the flip window: from the first replica's flip push to the last one's, as the simulators
  log them (`reload_request`, millisecond stamps): how long the replicas disagreed on the
  labels, to within the push's own time;
- failed requests: a predict loop by label `stable` on every replica, back to back.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import EXAMPLE_MODELS, median, percentile, table
from reconciler.testing import SimulatorProcess
from reconciler.testing.traffic import PredictStream

MODEL = "animals"
BODY = (EXAMPLE_MODELS.parent / "dog_example.json").read_bytes()
CYCLE = {1: 2, 2: 3, 3: 1}


def desired(versions: list[int], stable: int, canary: int) -> str:
    return (
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n"
        f"    versions: [{', '.join(map(str, sorted(versions)))}]\n"
        f"    labels: {{stable: {stable}, canary: {canary}}}\n"
    )


def stamps(log: str) -> list[float]:
    found = []
    for line in log.splitlines():
        if "reload_request" in line:
            when = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
            found.append(when.timestamp())
    return found


@contextlib.contextmanager
def fleet(root: Path, size: int) -> Iterator[dict[str, SimulatorProcess]]:
    shutil.copytree(EXAMPLE_MODELS, root / "models")
    (root / "desired").mkdir()
    (root / "desired" / "animals.yaml").write_text(desired([1, 2], 1, 2))
    with contextlib.ExitStack() as stack:
        sims = {}
        for i in range(size):
            name = f"tfs-{i:02d}"
            config = root / "replicas" / name / "models.config"
            config.parent.mkdir(parents=True)
            shutil.copy(root / "models" / "models.config", config)
            # Loads take 50 ms: the simulator's reload that adds a model can miss a load that
            # ends within the same step (reported; a real load always takes longer).
            sims[name] = stack.enter_context(
                SimulatorProcess(
                    root / "models", config, file_system_poll_seconds=0.2, load_seconds=0.05
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
        yield sims


def apply(root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    return subprocess.run(
        ["tfs-reconciler", "apply", "--fleet", "fleet.yaml", "--desired", "desired",
         "--models-dir", "models", "--reload", "grpc", "--file-system-poll-seconds", "0.2"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def measure(size: int, promotions: int) -> dict[str, list[float] | int]:
    live: list[float] = []
    flipped: list[float] = []
    windows: list[float] = []
    failed = total = 0
    with tempfile.TemporaryDirectory(prefix="tfs-fleet-bench-") as folder:
        root = Path(folder)
        with fleet(root, size) as sims:
            first = apply(root)  # from the lab's config to [1, 2], stable 1, canary 2
            assert first.returncode == 0, first.stdout + first.stderr
            canary = 2
            with contextlib.ExitStack() as loops:
                streams = [
                    loops.enter_context(
                        PredictStream(s.rest_url, MODEL, BODY, label="stable", interval=0.02,
                                      max_seconds=3600)
                    )
                    for s in sims.values()
                ]  # fmt: skip
                for _ in range(promotions):
                    before = {n: len(stamps(s.log)) for n, s in sims.items()}
                    new = CYCLE[canary]
                    started = time.time()
                    (root / "desired" / "animals.yaml").write_text(
                        desired([canary, new], canary, new)
                    )
                    result = apply(root)
                    assert result.returncode == 0, result.stdout + result.stderr
                    live.append(time.time() - started)
                    flips = []
                    for name, sim in sims.items():
                        pushes = stamps(sim.log)[before[name] :]
                        assert len(pushes) == 3, (name, pushes)  # prepare, flip, cleanup
                        flips.append(pushes[1])
                    flipped.append(max(flips) - started)
                    windows.append(max(flips) - min(flips))
                    canary = new
            failed = sum(len(s.failures) for s in streams)
            total = sum(s.total for s in streams)
    return {"live": live, "flipped": flipped, "windows": windows, "failed": failed, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--promotions", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for size in args.replicas:
        found = measure(size, args.promotions)
        live, flipped, windows = found["live"], found["flipped"], found["windows"]
        assert isinstance(live, list) and isinstance(flipped, list) and isinstance(windows, list)
        rows.append(
            [
                size,
                args.promotions,
                f"{median(live):.2f} s (max {max(live):.2f})",
                f"{median(flipped):.2f} s",
                f"{1000 * median(windows):.0f} / {1000 * percentile(windows, 99):.0f}"
                f" / {1000 * max(windows):.0f} ms",
                f"{found['failed']} of {found['total']}",
            ]
        )
    print(
        table(
            [
                "replicas",
                "promotions",
                "commit-to-done (median)",
                "commit-to-flip",
                "flip window p50 / p99 / max",
                "failed requests",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
