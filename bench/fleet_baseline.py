"""Fleet baseline: what users with several TFS replicas do today, measured.

Every replica polls one shared models.config (``--model_config_file_poll_wait_seconds``), and a
promotion is an edit of that file: each replica picks it up at its own next poll, so for a
while some replicas resolve the label to the old version and others to the new one. This
part runs N simulator replicas on the lab's models (all versions loaded, labels allowed on any
version, as the lab's command line), each with its own event log (``--sim_event_log``), and
moves ``stable`` back and forth by rewriting the shared file at random points of the poll
cycles. Behind a real nginx (``reconciler.testing.balancer``) two clients send predict
requests by label ``stable`` all along.

Figures: the label-disagreement window of each promotion (from the first replica's label move
to the last one's, from the event logs; ``reconciler.testing.label_window``), and the failed
requests through the balancer. This is the row the fleet rollout is compared with.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import EXAMPLE_MODELS, ROOT, Section, ms, table
from reconciler.testing import SimulatorProcess
from reconciler.testing.balancer import Balancer
from reconciler.testing.label_window import (
    disagreement_windows,
    percentile,
    read_event_log,
    unavailable_label_spans,
)

SIZES = (5, 20)
QUICK_SIZES = (5,)
ROUNDS, PROMOTIONS = 5, 4  # fresh replicas (new poll phases) per round; moves per round
QUICK_ROUNDS, QUICK_PROMOTIONS = 1, 4
POLL_SECONDS = 1.0
MODEL, LABEL = "animals", "stable"
DOG = (ROOT / "examples" / "dog_example.json").read_bytes()
STABLE = re.compile(r"(key: 'stable'\s*value: )(\d+)")


@dataclass
class Load:
    """Clients sending predict requests by label through the balancer until stopped."""

    url: str
    clients: int = 2
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        target = f"{self.url}/v1/models/{MODEL}/labels/{LABEL}:predict"
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    answer = session.post(target, data=DOG, timeout=10)
                    why = None if answer.status_code == 200 else f"HTTP {answer.status_code}"
                except requests.RequestException as error:
                    why = type(error).__name__
                with self._lock:
                    if why is None:
                        self.ok += 1
                    else:
                        self.failed[why] += 1

    @contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(15)


@dataclass(frozen=True)
class Row:
    replicas: int
    promotions: int
    windows: tuple[float, ...]  # seconds
    requests: int
    failed: int
    failures: str
    unavailable_spans: int


def set_stable(config: Path, version: int) -> None:
    """Point ``stable`` at ``version`` in the shared models.config, replaced whole (a poll
    never reads half a file)."""
    text, count = STABLE.subn(lambda m: f"{m.group(1)}{version}", config.read_text())
    assert count == 1, "the lab's models.config has one stable label"
    staged = config.with_name(f".{config.name}.new")
    staged.write_text(text)
    os.replace(staged, config)


def wait_for_moves(sims: list[SimulatorProcess], moves: int, timeout: float) -> None:
    """Until every replica's event log shows ``moves`` moves of the label."""
    deadline = time.monotonic() + timeout
    pending = list(sims)
    while pending:
        pending = [
            s
            for s in pending
            if sum(
                1
                for e in s.events()
                if e["kind"] == "label" and e["label"] == LABEL and e["old"] is not None
            )
            < moves
        ]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} replicas did not move {LABEL} in {timeout} s")
        time.sleep(0.05)


@dataclass(frozen=True)
class Round:
    windows: tuple[float, ...]
    ok: int
    failed: Counter[str]
    unavailable_spans: int


def start_staggered(sim: SimulatorProcess) -> None:
    """Start at a random point of a poll period, as replicas started at different times
    are: each replica's config poll then runs at its own phase (fixed for its life, as
    TFS's poll timer)."""
    time.sleep(random.uniform(0, POLL_SECONDS))
    sim.start()


def measure_round(replicas: int, promotions: int, workdir: Path) -> Round:
    """Fresh replicas (new poll phases), a balancer, the load, ``promotions`` label moves."""
    models = workdir / "models"
    shutil.copytree(EXAMPLE_MODELS, models)
    config = models / "models.config"
    logs = [workdir / f"events-{i:02d}.jsonl" for i in range(replicas)]
    sims = [
        SimulatorProcess(models, poll_seconds=POLL_SECONDS, extra_args=[f"--sim_event_log={log}"])
        for log in logs
    ]
    with ExitStack() as stack:
        for sim in sims:
            stack.callback(sim.stop)
        with ThreadPoolExecutor(max_workers=replicas) as pool:
            list(pool.map(start_staggered, sims))
        balancer = stack.enter_context(
            Balancer([f"127.0.0.1:{s.rest_port}" for s in sims], timeout=5.0)
        )
        started = time.time()
        load = stack.enter_context(Load(balancer.url).running())
        version = 2
        for done in range(1, promotions + 1):
            time.sleep(random.uniform(0, POLL_SECONDS))  # a random point of the poll cycles
            version = 3 if version == 2 else 2
            set_stable(config, version)
            wait_for_moves(sims, done, timeout=10 * POLL_SECONDS)
        time.sleep(0.2)  # requests during the last move's tail
    events = {f"tfs-{i:02d}": read_event_log(log) for i, log in enumerate(logs)}
    spans = [
        span
        for name, replica_events in events.items()
        for span in unavailable_label_spans(name, replica_events, MODEL, LABEL)
        if span.start >= started
    ]
    return Round(
        windows=tuple(w.seconds for w in disagreement_windows(events, MODEL, LABEL)),
        ok=load.ok,
        failed=load.failed,
        unavailable_spans=len(spans),
    )


def measure(replicas: int, rounds: int, promotions: int) -> Row:
    done: list[Round] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-fleet-baseline-") as workdir:
            done.append(measure_round(replicas, promotions, Path(workdir)))
    failed = sum((r.failed for r in done), Counter[str]())
    return Row(
        replicas=replicas,
        promotions=rounds * promotions,
        windows=tuple(w for r in done for w in r.windows),
        requests=sum(r.ok for r in done) + sum(failed.values()),
        failed=sum(failed.values()),
        failures=", ".join(f"{n}x {why}" for why, n in failed.most_common()),
        unavailable_spans=sum(r.unavailable_spans for r in done),
    )


def run(section: Section, quick: bool) -> dict[int, Row]:
    sizes = QUICK_SIZES if quick else SIZES
    rounds = QUICK_ROUNDS if quick else ROUNDS
    promotions = QUICK_PROMOTIONS if quick else PROMOTIONS
    section.add(
        f"The baseline without tfs-reconciler: N simulator replicas polling one shared "
        f"models.config every {POLL_SECONDS:g} s (`--model_config_file_poll_wait_seconds`), "
        f"the lab's versions 1-3 all loaded. Per size, {rounds} rounds of fresh replicas, each "
        "started at a random point of a poll period (so each polls at its own phase, fixed "
        f"for its life as with TFS), and {promotions} promotions per round, each a rewrite "
        "of the file moving `stable` 2 <-> 3 at a random point of the poll cycles, the next "
        "once every replica has moved. Window: from the first replica's move to the last "
        "one's, from the simulators' event logs (`--sim_event_log`); percentiles interpolated. "
        "Requests: two clients, keep-alive, predict by label `stable` through nginx "
        "(round robin over every replica) all along. Label spans: times a label resolved, on "
        "some replica, to a version not AVAILABLE there. Command: "
        "`python -m bench --only fleet-baseline`."
    )
    rows: dict[int, Row] = {}
    for replicas in sizes:
        rows[replicas] = measure(replicas, rounds, promotions)
        row = rows[replicas]
        print(
            f"  {replicas} replicas: window p50 {ms(percentile(row.windows, 50))} ms, "
            f"p99 {ms(percentile(row.windows, 99))} ms, failed {row.failed} of {row.requests}",
            flush=True,
        )
    section.add(
        table(
            [
                "replicas",
                "promotions",
                "window p50 ms",
                "p99 ms",
                "max ms",
                "min ms",
                "requests",
                "failed",
                "label spans not AVAILABLE",
            ],
            [
                [
                    r.replicas,
                    len(r.windows),
                    ms(percentile(r.windows, 50)),
                    ms(percentile(r.windows, 99)),
                    ms(max(r.windows)),
                    ms(min(r.windows)),
                    r.requests,
                    r.failed,
                    r.unavailable_spans,
                ]
                for r in rows.values()
            ],
        )
    )
    for row in rows.values():
        if row.failures:
            section.add(f"{row.replicas} replicas, failed requests: {row.failures}")
    return rows
