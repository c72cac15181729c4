"""Zero downtime: failed requests during canary-to-stable promotions under steady load.

A promotion is one commit that moves `stable` to the canary's version, brings in the next
version as the new canary and drops the old stable: versions [a, b] (stable a, canary b)
become [b, c] (stable b, canary c), cycling through the example's versions 1 -> 2 -> 3 -> 1.
So each promotion loads a version, moves two labels and unloads a version (three phases).

While promotions run, two client threads send REST predicts back to back: one by label
`stable`, one alternating label `canary` and no version (the highest AVAILABLE). A request
fails when it does not answer 200 (or the connection fails). An outage runs from a client's
last good answer before a failed request to its next good answer (bench.common.outages), the
two clients' outages joined where they overlap. The daemon (`run --git`) applies each commit;
the next commit waits for its history record.
`restart` is the CLI (`apply --reload restart`) against the simulator in Docker (lab flags).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import EXAMPLE_MODELS, Section, median, merged, outages, table
from bench.lab import MODEL, Daemon, Lab, animals, daemon_available, lab, outcomes
from reconciler.testing import SimulatorProcess

BODY = json.dumps(json.loads((EXAMPLE_MODELS.parent / "dog_example.json").read_text())).encode()
CYCLE = {1: 2, 2: 3, 3: 1}


def promoted(stable: int, canary: int) -> tuple[str, int, int]:
    new = CYCLE[canary]
    return animals([canary, new], stable=canary, canary=new), canary, new


@dataclass
class Load:
    rest_url: str
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    # Per client: when each good answer and each failure came (perf_counter seconds).
    good_at: list[list[float]] = field(default_factory=list)
    failed_at: list[list[float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _send(self, host: str, port: int, path: str) -> str | None:
        # A connection per request, like the reconciler's client: a restart refusing
        # connections counts as failed requests.
        connection = http.client.HTTPConnection(host, port, timeout=5)
        try:
            connection.request(
                "POST", path, body=BODY, headers={"Content-Type": "application/json"}
            )
            reply = connection.getresponse()
            text = reply.read()
            if reply.status != 200:
                return f"{reply.status} {text[:120].decode(errors='replace')}"
            return None
        except (OSError, http.client.HTTPException) as error:
            return f"{type(error).__name__}: {error}"[:140]
        finally:
            connection.close()

    def _client(self, paths: list[str]) -> None:
        host, port = self.rest_url.removeprefix("http://").split(":")
        with self._lock:
            good_at: list[float] = []
            failed_at: list[float] = []
            self.good_at.append(good_at)
            self.failed_at.append(failed_at)
        turn = 0
        while not self._stop.is_set():
            failure = self._send(host, int(port), paths[turn % len(paths)])
            answered = time.perf_counter()
            turn += 1
            with self._lock:
                self.requests += 1
                if failure is not None:
                    self.failures[failure] += 1
                    failed_at.append(answered)
                else:
                    good_at.append(answered)
            if failure is not None:
                time.sleep(0.01)  # a down server: count, do not spin

    def outages(self) -> list[float]:
        """Seconds of each outage, from a last good answer to the next, any client's."""
        found = [
            outage
            for good, failed in zip(self.good_at, self.failed_at, strict=True)
            for outage in outages(good, failed)
        ]
        return [end - start for start, end in merged(found)]

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        base = f"/v1/models/{MODEL}"
        threads = [
            threading.Thread(target=self._client, args=([f"{base}/labels/stable:predict"],)),
            threading.Thread(
                target=self._client,
                args=([f"{base}/labels/canary:predict", f"{base}:predict"],),
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(10)


@dataclass
class Result:
    way: str
    promotions: int = 0
    failed_promotions: int = 0
    requests: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    outages: list[float] = field(default_factory=list)  # seconds, last good answer to next

    def row(self) -> list[str]:
        failed = sum(self.failures.values())
        return [
            self.way,
            str(self.promotions),
            str(self.failed_promotions),
            str(self.requests),
            str(failed),
            f"{self.seconds / max(self.promotions, 1) * 1000:.0f}",
            f"{self.requests / self.seconds:.0f}" if self.seconds else "-",
            str(len(self.outages)),
            spread(self.outages),
            f"{sum(self.outages):.1f}",
            f"{sum(self.outages) / max(self.promotions, 1):.2f}",
        ]


def spread(values: list[float]) -> str:
    """``min / median / max`` seconds, or ``-`` for none."""
    if not values:
        return "-"
    return f"{min(values):.2f} / {median(values):.2f} / {max(values):.2f}"


def with_daemon(mode: str, count: int, tfs_poll: float) -> Result:
    result = Result(
        f"daemon `--reload {mode}`" + (f" (TFS poll {tfs_poll:g} s)" if mode == "poll" else "")
    )
    with (
        lab(animals([1, 2], stable=1, canary=2), git_repo=True) as the_lab,
        SimulatorProcess(the_lab.models_dir, poll_seconds=tfs_poll) as tfs,
        Daemon(
            the_lab, tfs.rest_url, tfs.grpc_target, "--git", f"--reload={mode}", "--resync=3600"
        ),
        Load(tfs.rest_url).running() as load,
    ):
        stable, canary = 1, 2
        records = len(outcomes(the_lab.state_dir))
        started = time.perf_counter()
        for _ in range(count):
            text, stable, canary = promoted(stable, canary)
            the_lab.commit(text, f"promote {stable}")
            deadline = time.perf_counter() + 60
            while len(outcomes(the_lab.state_dir)) <= records:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"no history record in 60 s:\n{the_lab.root}")
                time.sleep(0.01)
            history = outcomes(the_lab.state_dir)
            records = len(history)
            result.promotions += 1
            if history[-1].outcome != "applied":
                result.failed_promotions += 1
        result.seconds = time.perf_counter() - started
    result.requests, result.failures = load.requests, load.failures
    result.outages = load.outages()
    return result


def with_restart(count: int) -> Result:
    from reconciler.testing import docker_bed

    result = Result("CLI `apply --reload restart` (Docker)")
    client = docker_bed.ensure_engine()
    images = {tag for image in client.images.list() for tag in image.tags}
    image = (
        docker_bed.SIM_IMAGE
        if docker_bed.SIM_IMAGE in images
        else docker_bed.ensure_sim_image(client).tag
    )
    with (
        lab(animals([1, 2], stable=1, canary=2)) as the_lab,
        docker_bed.running_container(
            client, the_lab.models_dir, image=image, wait_for_model=MODEL, wait_for_versions=(1, 2)
        ) as container,
        Load(container.rest_url).running() as load,
    ):
        stable, canary = 1, 2
        started = time.perf_counter()
        for _ in range(count):
            text, stable, canary = promoted(stable, canary)
            the_lab.write_desired(text)
            done = subprocess.run(
                [*the_lab.cli("apply"), "--reload=restart", f"--container={container.name}",
                 "--no-verify", f"--rest-url={container.rest_url}",
                 f"--grpc-target={container.grpc_target}", "--timeout=60"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            result.promotions += 1
            if done.returncode != 0:
                result.failed_promotions += 1
                print(f"    restart apply failed: {done.stderr.strip()[-300:]}", flush=True)
        result.seconds = time.perf_counter() - started
    result.requests, result.failures = load.requests, load.failures
    result.outages = load.outages()
    return result


def run(section: Section, quick: bool) -> dict[str, Result]:
    results: dict[str, Result] = {}
    if not daemon_available():
        section.add("Not run: this build has no `tfs-reconciler run`.")
        return results
    n = 5 if quick else 100
    for key, tfs_poll in (("grpc", 1.0), ("poll", 0.25)):
        started = time.perf_counter()
        results[key] = with_daemon(key, n, tfs_poll)
        r = results[key]
        print(f"  {r.way}: {r.promotions} promotions, {r.requests} requests, "
              f"{sum(r.failures.values())} failed ({time.perf_counter() - started:.0f} s)",
              flush=True)  # fmt: skip
    restarts = 0 if quick else n  # the same 100 promotions as the other ways
    if restarts:
        try:
            results["restart"] = with_restart(restarts)
            r = results["restart"]
            print(f"  {r.way}: {r.promotions} promotions, {r.requests} requests, "
                  f"{sum(r.failures.values())} failed, {len(r.outages)} outages "
                  f"(s min / median / max: {spread(r.outages)})", flush=True)  # fmt: skip
        except Exception as error:  # no Docker engine here: say so, keep the other figures
            section.add(f"`restart` not measured: {type(error).__name__}: {error}")
    section.add(
        "Each promotion: versions [a, b] stable a canary b -> [b, c] stable b canary c "
        "(load c, move both labels, unload a: three phases). Load: two client threads, a "
        "connection per request, back to back, by label `stable`, by label `canary` and by "
        "no version. The poll row runs TFS's config poll at 0.25 s to keep 100 promotions "
        "within the time budget (the poll period changes the wait, not the phases). "
        "An outage runs from a client's last good answer before a failed request to its next "
        "good answer (the two clients' outages joined where they overlap, so outages of "
        "promotions that follow each other closely may count as one); a client pauses 10 ms "
        "after a failure, so an outage is known to about 10 ms. "
        + ("`restart` is skipped in --quick. " if quick else "")
        + "\n\n"
        + table(
            [
                "way",
                "promotions",
                "failed promotions",
                "requests",
                "failed requests",
                "ms per promotion",
                "requests/s",
                "outages",
                "outage s min / median / max",
                "seconds out",
                "s out per promotion",
            ],
            [r.row() for r in results.values()],
        )
    )
    for r in results.values():
        if r.failures:
            worst = "; ".join(f"{count}x {text}" for text, count in r.failures.most_common(3))
            section.add(f"{r.way}, failed requests: {worst}")
    for key in ("grpc", "poll"):
        if key in results:
            failed = sum(results[key].failures.values())
            section.verdict(f"0 failed requests with {key}", f"{failed} of {results[key].requests}",
                            failed == 0 and results[key].failed_promotions == 0)  # fmt: skip
    return results


__all__ = ["Lab", "Path", "run"]
