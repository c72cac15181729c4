"""Live read: what `diff` and `status` cost with N models, most of it reading TFS's live state.

N models x 5 versions x 3 labels on disk, in sync, served by the simulator (REST on loopback).
A live read is one model-status request per model and one label-metadata request per label
(TFS has no cheaper way to say where a label points): 4 requests a model. Timed: the read
alone in this process (`observe_for`, kept-alive connections, `LIVE_READERS` at a time), with
this process's CPU and the simulator's; and the commands as a user runs them, each a fresh
process (start-up, parse and plan included), with no daemon to ask.
"""

from __future__ import annotations

import os
import subprocess
import time

from bench.common import Section, median, ms, table
from bench.cost import desired_for
from bench.lab import lab
from reconciler.desired_files import load_desired
from reconciler.observe import LIVE_READERS
from reconciler.reconcile import observe_for
from reconciler.settings import Settings
from reconciler.testing import SimulatorProcess
from reconciler.testing.simulator import free_port
from reconciler.tfs_rest import TfsRest

TICKS = os.sysconf("SC_CLK_TCK")
TARGET_MODELS = 1_000
TARGET_SECONDS = 1.0


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def measure(models: int, repeat: int) -> dict[str, float]:
    with (
        lab(desired_for(models), models=models) as the_lab,
        SimulatorProcess(
            the_lab.models_dir, file_system_poll_seconds=30.0, startup_timeout=600
        ) as tfs,
    ):
        settings = Settings(
            desired=the_lab.desired_dir,
            models_dir=the_lab.models_dir,
            rest_url=tfs.rest_url,
            grpc_target=tfs.grpc_target,
            state_dir=the_lab.state_dir,
        )
        desired = load_desired(settings.desired, settings.serving_root)
        assert tfs.pid is not None
        walls, cpus, sims = [], [], []
        for _ in range(repeat):
            sim_before, cpu_before = _cpu(tfs.pid), time.process_time()
            began = time.perf_counter()
            observed = observe_for(settings, desired, TfsRest(settings.rest_url, 10.0))
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu_before)
            sims.append(_cpu(tfs.pid) - sim_before)
            assert observed.live is not None and observed.live.reachable, observed.live
        commands = {}
        for name, extra in (("diff", []), ("status", [f"--metrics-addr=127.0.0.1:{free_port()}"])):
            argv = [
                *the_lab.cli(name, *extra),
                f"--rest-url={tfs.rest_url}",
                f"--grpc-target={tfs.grpc_target}",
            ]
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                done = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "TFS_RECONCILER_ENV_FILE": ""},
                    timeout=300,
                )
                times.append(time.perf_counter() - began)
                assert done.returncode == 0, done.stdout + done.stderr  # in sync
            commands[name] = median(times)
        return {
            "read": median(walls),
            "read_cpu": median(cpus),
            "sim_cpu": median(sims),
            "diff": commands["diff"],
            "status": commands["status"],
        }


def run(section: Section, quick: bool) -> dict[int, dict[str, float]]:
    sizes = (100,) if quick else (100, TARGET_MODELS)
    repeat = 2 if quick else 5
    results = {size: measure(size, repeat) for size in sizes}
    rows = [
        [
            f"{size:,}",
            f"{size * 4:,}",
            ms(r["read"]),
            ms(r["read_cpu"]),
            ms(r["sim_cpu"]),
            ms(r["diff"]),
            ms(r["status"]),
        ]
        for size, r in results.items()
    ]
    load = os.getloadavg()[0]
    section.add(
        f"Median of {repeat} runs; {LIVE_READERS} requests in flight; load average "
        f"{load:.1f} at the end (on a busy box wall time grows, CPU time much less).\n\n"
        + table(
            [
                "models",
                "requests",
                "live read ms",
                "its CPU ms (this process)",
                "simulator CPU ms",
                "`diff` ms",
                "`status` ms",
            ],
            rows,
        )
    )
    if TARGET_MODELS in results:
        r = results[TARGET_MODELS]
        worst = max(r["diff"], r["status"])
        section.verdict(
            f"diff and status, {TARGET_MODELS:,} models < {ms(TARGET_SECONDS)} ms",
            f"diff {ms(r['diff'])} ms, status {ms(r['status'])} ms",
            worst < TARGET_SECONDS,
        )
    else:
        section.verdict(
            f"diff and status, {TARGET_MODELS:,} models < {ms(TARGET_SECONDS)} ms",
            "not run (--quick)",
            None,
        )
    return results
