"""Commit-to-live latency: from a desired-state change to the change visible in TFS.

The change is a label move on the example model `animals` (versions 1-3 served; `stable` and
`canary` swap between 2 and 3), so it is one phase. "Visible" is TFS resolving the label to
the new version (`GET /v1/models/animals/labels/stable/metadata`, probed every 5 ms). TFS is
the simulator with zero load time and its config file poll at 1 s, so the figure is the
tool's own cost. Before each change the harness waits a random time (up to one poll period
for poll-based ways), so changes land at random points of TFS's poll cycle.

Ways measured:
- daemon (`tfs-reconciler run --git`): t0 is just before `git commit`;
- CLI (`tfs-reconciler apply`): t0 is just before the command starts (desired file written);
- in-process `reconcile()` (the CLI's work without the interpreter start);
- the lab's way: models.config edited by hand, picked up by TFS's own poll;
- the Kubernetes sidecar (`tfs-reconciler run --sidecar`), its desired state a ConfigMap
  volume updated as the kubelet does (reconciler.testing.kubelet): t0 is the rename of
  `..data_tmp` over `..data`, the one step that makes the update visible in the pod.
"""

from __future__ import annotations

import functools
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import Section, median, ms, percentile, table
from bench.lab import (
    MODEL,
    Daemon,
    Lab,
    animals,
    daemon_available,
    get_json,
    lab,
    outcomes,
    wait_until,
)
from reconciler.testing import SimulatorProcess
from reconciler.testing.lab import label_version

POLL_SECONDS = 1.0
LAB_POLL_SECONDS = 60.0
TIMEOUT = 20.0


def state(stable: int) -> str:
    return animals([1, 2, 3], deprecated=1, stable=stable, canary=5 - stable)


@dataclass
class Samples:
    name: str
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # the command's / pass's own end
    failures: int = 0
    note: str = ""

    def row(self) -> list[str]:
        n = len(self.latencies)
        return [
            self.name,
            str(n),
            ms(median(self.latencies)),
            ms(percentile(self.latencies, 95)),
            ms(min(self.latencies)) if n else "n/a",
            ms(max(self.latencies)) if n else "n/a",
            ms(median(self.finished)) if self.finished else "-",
            str(self.failures),
        ]


HEADERS = ["way", "n", "median ms", "p95 ms", "min ms", "max ms", "done ms", "failed"]

Change = Callable[[Lab, int], Callable[[], object] | None]


def _moves(
    samples: Samples,
    the_lab: Lab,
    tfs: SimulatorProcess,
    count: int,
    change: Change,
    max_delay: float,
    settle: Callable[[], bool] | None = None,
) -> None:
    """`count` label moves: change(lab, new stable) starts one and returns what to wait on."""
    stable = label_version(tfs.rest_url, MODEL, "stable") or 2
    for _ in range(count):
        time.sleep(random.uniform(0.0, max_delay))
        new = 5 - stable
        started = time.perf_counter()
        finish = change(the_lab, new)
        seen = wait_until(functools.partial(_resolves, tfs.rest_url, new), TIMEOUT)
        if seen is None:
            samples.failures += 1
        else:
            samples.latencies.append(seen - started)
            stable = new
        if finish is not None:
            finish()
            samples.finished.append(time.perf_counter() - started)
        if settle is not None and wait_until(settle, TIMEOUT, 0.01) is None:
            samples.failures += 1
        stable = label_version(tfs.rest_url, MODEL, "stable") or stable


def _resolves(rest_url: str, version: int) -> bool:
    return label_version(rest_url, MODEL, "stable") == version


def cli_apply(mode: str, count: int, tfs_poll: float = POLL_SECONDS) -> Samples:
    samples = Samples(f"CLI `apply --reload {mode}`")
    with (
        lab(state(2)) as the_lab,
        SimulatorProcess(the_lab.models_dir, poll_seconds=tfs_poll) as tfs,
    ):

        def change(the_lab: Lab, stable: int) -> Callable[[], object]:
            the_lab.write_desired(state(stable))
            process = subprocess.Popen(
                [*the_lab.cli("apply"), f"--reload={mode}", "--no-verify",
                 f"--rest-url={tfs.rest_url}", f"--grpc-target={tfs.grpc_target}",
                 "--timeout=30"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            return lambda: process.wait(60)

        _moves(samples, the_lab, tfs, count, change, tfs_poll if mode == "poll" else 0.2)
    return samples


LOAD_SECONDS = 1.0


def cli_with_load(count: int) -> Samples:
    """`apply --reload grpc` moving `canary` to a new version 3 that takes LOAD_SECONDS to
    load (load, wait, verify nothing, move the label), timed to the label answering; an
    untimed apply takes version 3 away again before the next sample."""
    samples = Samples(f"CLI `apply --reload grpc`, new version with a {LOAD_SECONDS:g} s load")
    without = animals([1, 2], stable=1, canary=2)
    with_three = animals([1, 2, 3], stable=1, canary=3)
    with (
        lab(without) as the_lab,
        SimulatorProcess(
            the_lab.models_dir,
            poll_seconds=POLL_SECONDS,
            extra_args=[f"--sim_load_seconds_for={MODEL}:3={LOAD_SECONDS}"],
        ) as tfs,
    ):
        apply = [*the_lab.cli("apply"), "--reload=grpc", "--no-verify",
                 f"--rest-url={tfs.rest_url}", f"--grpc-target={tfs.grpc_target}",
                 "--timeout=30"]  # fmt: skip
        subprocess.run(apply, check=True, stdout=subprocess.DEVNULL)
        for _ in range(count):
            the_lab.write_desired(with_three)
            started = time.perf_counter()
            process = subprocess.Popen(apply, stdout=subprocess.DEVNULL)
            seen = wait_until(lambda: label_version(tfs.rest_url, MODEL, "canary") == 3, TIMEOUT)
            if process.wait(60) != 0 or seen is None:
                samples.failures += 1
            else:
                samples.latencies.append(seen - started)
                samples.finished.append(time.perf_counter() - started)
            the_lab.write_desired(without)
            subprocess.run(apply, check=False, stdout=subprocess.DEVNULL)
    return samples


def in_process(count: int) -> Samples:
    from reconciler import logs
    from reconciler.desired_files import load_desired
    from reconciler.reconcile import Revision, reconcile
    from reconciler.reload import ReloadMode, choose_reloader
    from reconciler.settings import Settings

    logs.configure("warning")
    samples = Samples("in-process `reconcile()`, grpc")
    with (
        lab(state(2)) as the_lab,
        SimulatorProcess(the_lab.models_dir, poll_seconds=POLL_SECONDS) as tfs,
    ):
        settings = Settings(
            desired=the_lab.desired_dir,
            models_dir=the_lab.models_dir,
            rest_url=tfs.rest_url,
            grpc_target=tfs.grpc_target,
            state_dir=the_lab.state_dir,
            timeout=30,
        )
        reloader = choose_reloader(
            ReloadMode.GRPC,
            grpc_target=tfs.grpc_target,
            docker=None,
            allow_restart=False,
        )

        def change(the_lab: Lab, stable: int) -> None:
            the_lab.write_desired(state(stable))
            desired = load_desired(settings.desired)
            reconcile(desired, settings=settings, reloader=reloader, revision=Revision(),
                      verify=False)  # fmt: skip
            return None

        _moves(samples, the_lab, tfs, count, change, 0.2)
    return samples


def daemon(mode: str, count: int) -> Samples:
    samples = Samples(f"daemon `run --git --reload {mode}`")
    with (
        lab(state(2), git_repo=True) as the_lab,
        SimulatorProcess(the_lab.models_dir, poll_seconds=POLL_SECONDS) as tfs,
        Daemon(
            the_lab, tfs.rest_url, tfs.grpc_target, "--git", f"--reload={mode}", "--resync=3600"
        ),
    ):
        done = {"records": len(outcomes(the_lab.state_dir))}

        def change(the_lab: Lab, stable: int) -> None:
            the_lab.commit(state(stable), f"stable -> {stable}")
            return None

        def settled() -> bool:
            # one history record per applied change: wait for it before the next commit
            count = len(outcomes(the_lab.state_dir))
            if count > done["records"]:
                done["records"] = count
                return True
            return False

        _moves(samples, the_lab, tfs, count, change,
               POLL_SECONDS if mode == "poll" else 0.2, settled)  # fmt: skip
    return samples


def sidecar_configmap(count: int) -> Samples:
    """`run --sidecar` on a ConfigMap volume; t0 is the swap of ``..data``."""
    from reconciler.testing.kubelet import AtomicWriter

    samples = Samples("daemon `run --sidecar`, ConfigMap swap")
    with lab(state(2)) as the_lab:
        folder = the_lab.root / "configmap"
        folder.mkdir()
        AtomicWriter(folder).write({"animals.yaml": state(2).encode()})
        with (
            SimulatorProcess(the_lab.models_dir) as tfs,
            Daemon(
                the_lab, tfs.rest_url, tfs.grpc_target, "--sidecar", f"--desired={folder}",
                "--reload=grpc", "--resync=3600",
            ),
        ):  # fmt: skip
            done = {"records": len(outcomes(the_lab.state_dir))}
            swapped_at: list[float] = []

            def at(step: str) -> None:
                if step == "data_tmp_linked":  # the next step is the rename
                    swapped_at.append(time.perf_counter())

            writer = AtomicWriter(folder, on_step=at)
            stable = 2
            for _ in range(count):
                time.sleep(random.uniform(0.0, 0.2))
                new = 5 - stable
                writer.write({"animals.yaml": state(new).encode()})
                seen = wait_until(functools.partial(_resolves, tfs.rest_url, new), TIMEOUT)
                if seen is None:
                    samples.failures += 1
                else:
                    samples.latencies.append(time.perf_counter() - swapped_at[-1])
                    stable = new

                def recorded() -> bool:
                    records = len(outcomes(the_lab.state_dir))
                    if records > done["records"]:
                        done["records"] = records
                        return True
                    return False

                if wait_until(recorded, TIMEOUT, 0.01) is None:
                    samples.failures += 1
    return samples


def version_available(rest_url: str, version: int) -> bool:
    try:
        _, body = get_json(rest_url, f"/v1/models/{MODEL}")
    except (OSError, ValueError):
        return False
    entries = body.get("model_version_status", []) if isinstance(body, dict) else []
    return any(e.get("version") == str(version) and e.get("state") == "AVAILABLE" for e in entries)


def daemon_new_version(count: int) -> Samples:
    """A commit that adds version 3 (labels unchanged), live when TFS lists it AVAILABLE;
    an untimed commit removes it again before the next sample."""
    samples = Samples("daemon `run --git --reload grpc`, new version")
    without, with_three = (
        animals([1, 2], stable=1, canary=2),
        animals([1, 2, 3], stable=1, canary=2),
    )
    with (
        lab(without, git_repo=True) as the_lab,
        SimulatorProcess(the_lab.models_dir, poll_seconds=POLL_SECONDS) as tfs,
        Daemon(the_lab, tfs.rest_url, tfs.grpc_target, "--git", "--reload=grpc", "--resync=3600"),
    ):
        records = len(outcomes(the_lab.state_dir))

        def recorded() -> bool:
            return len(outcomes(the_lab.state_dir)) > records

        for number in range(count):
            time.sleep(random.uniform(0.0, 0.2))
            started = time.perf_counter()
            the_lab.commit(with_three, f"add 3 ({number})")
            seen = wait_until(functools.partial(version_available, tfs.rest_url, 3), TIMEOUT)
            if seen is None:
                samples.failures += 1
            else:
                samples.latencies.append(seen - started)
            if wait_until(recorded, TIMEOUT, 0.01) is None:
                samples.failures += 1
            records = len(outcomes(the_lab.state_dir))
            the_lab.commit(without, f"drop 3 ({number})")
            if wait_until(recorded, TIMEOUT, 0.01) is None:
                samples.failures += 1
            records = len(outcomes(the_lab.state_dir))
    return samples


def hand_edit(count: int, tfs_poll: float = POLL_SECONDS) -> Samples:
    samples = Samples(f"lab: hand edit, TFS poll {tfs_poll:g} s")
    with (
        lab(state(2)) as the_lab,
        SimulatorProcess(the_lab.models_dir, poll_seconds=tfs_poll) as tfs,
    ):

        def change(the_lab: Lab, stable: int) -> None:
            the_lab.hand_edit(state(stable))
            return None

        _moves(samples, the_lab, tfs, count, change, tfs_poll)
    return samples


def run(section: Section, quick: bool) -> dict[str, Samples]:
    n = 5 if quick else 20
    few = 2 if quick else 20
    results: dict[str, Samples] = {}
    has_daemon = daemon_available()
    plan: list[tuple[str, Callable[[], Samples]]] = []
    if has_daemon:
        plan.append(("daemon grpc", lambda: daemon("grpc", n)))
        plan.append(("daemon new version", lambda: daemon_new_version(n if not quick else few)))
        plan.append(("sidecar configmap", lambda: sidecar_configmap(n)))
        if not quick:
            plan.append(("daemon poll", lambda: daemon("poll", few)))
    plan += [
        ("cli grpc", lambda: cli_apply("grpc", few)),
        ("cli load", lambda: cli_with_load(3 if quick else 10)),
        ("in-process", lambda: in_process(n)),
        ("lab 1s", lambda: hand_edit(few)),
    ]
    if not quick:
        plan.insert(-2, ("cli poll", lambda: cli_apply("poll", few)))
    for key, measure in plan:
        started = time.perf_counter()
        results[key] = measure()
        print(f"  {results[key].name}: median {ms(median(results[key].latencies))} ms, "
              f"p95 {ms(percentile(results[key].latencies, 95))} ms "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    lab1 = results["lab 1s"]
    overhead = max(0.0, median(lab1.latencies) - POLL_SECONDS / 2) if lab1.latencies else 0.0
    rows = [s.row() for s in results.values()]
    rows.append([
        f"lab: hand edit, TFS poll {LAB_POLL_SECONDS:g} s (analytic)", "-",
        ms(LAB_POLL_SECONDS * 0.5 + overhead), ms(LAB_POLL_SECONDS * 0.95 + overhead),
        ms(overhead), ms(LAB_POLL_SECONDS + overhead), "-", "-",
    ])  # fmt: skip
    section.add(
        f"A label move (`stable` {{2 <-> 3}}) on `animals`, simulator with zero load time and "
        f"`--model_config_file_poll_wait_seconds={POLL_SECONDS:g}`. Latency: from the change "
        "(just before `git commit` for the daemon; just before the command starts for the "
        "CLI; the file replaced for a hand edit) to TFS resolving the label to the new "
        "version, probed every 5 ms. `done ms`: when the CLI command exited (it also waits "
        "for convergence and records history). Changes are spaced by a random wait (up to "
        "one poll period for poll-based ways) so they land at random points of TFS's poll "
        "cycle.\n\n" + table(HEADERS, rows)
    )
    section.add(
        f"The {LAB_POLL_SECONDS:g} s row is computed, not measured: a hand edit lands at a "
        f"uniformly random point of the poll cycle, so the wait is uniform on [0, "
        f"{LAB_POLL_SECONDS:g}] s (median {LAB_POLL_SECONDS / 2:g} s, p95 "
        f"{LAB_POLL_SECONDS * 0.95:g} s), plus TFS's own apply time, estimated from the 1 s "
        f"measurement as its median ({ms(median(lab1.latencies))} ms) minus the 0.5 s "
        f"expected wait, floored at 0: {ms(overhead)} ms."
    )
    loaded = results["cli load"]
    if loaded.latencies:
        over = median(loaded.latencies) - LOAD_SECONDS
        section.verdict(
            f"apply of a version with a {LOAD_SECONDS:g} s load: label moves within L + 1 s",
            f"median {ms(median(loaded.latencies))} ms (L + {ms(over)} ms)",
            over < 1.0,
        )
    grpc = results.get("daemon grpc")
    if grpc is not None and grpc.latencies:
        figure = f"median {ms(median(grpc.latencies))} ms"
        section.verdict("daemon + grpc commit-to-live median < 300 ms", figure,
                        median(grpc.latencies) < 0.3)  # fmt: skip
    else:
        section.verdict("daemon + grpc commit-to-live median < 300 ms", "no daemon", None)
    swap = results.get("sidecar configmap")
    if swap is not None and swap.latencies:
        figure = f"max {ms(max(swap.latencies))} ms of {len(swap.latencies)}"
        section.verdict("sidecar: a ConfigMap update live < 1 s after the ..data swap", figure,
                        max(swap.latencies) < 1.0 and not swap.failures)  # fmt: skip
    return results
