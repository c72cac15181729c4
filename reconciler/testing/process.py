"""The reconciler as a process, for tests of the daemon: what it logs, read as events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.testing.simulator import SimulatorProcess


class ReconcilerProcess:
    """`tfs-reconciler ARGS` (e.g. `run ...`) with `env` added, in its own process group;
    stderr (JSON lines, not a TTY) captured to `log_path` and parsed into events. `stop()`
    sends SIGTERM, then SIGKILLs the group after a timeout, so no test leaks one."""

    def __init__(
        self, args: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
    ) -> None:
        self.args = ["tfs-reconciler", *args]
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            base.pop(name, None)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            self.args,
            cwd=cwd,
            env={**base, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def wait_for_event(
        self,
        name: str,
        where: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = 15.0,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event `name` (from the `after`-th event on) satisfying `where`."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()[after:]
            for event in events:
                if event.get("event") == name and where(event):
                    return event
            if self.process.poll() is not None and time.monotonic() > deadline - timeout + 0.5:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}) without {name}:\n{self.text}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} event within {timeout} s:\n{self.text}")
            time.sleep(0.02)

    def count(self) -> int:
        """How many events so far (a mark for `wait_for_event(after=...)`)."""
        return len(self.events())

    @property
    def metrics_url(self) -> str:
        event = self.wait_for_event("http_endpoint_started")
        return f"http://{event['address']}"

    def kill(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, then SIGKILL the whole group; safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


def run_fleet(lab: Path, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    """`tfs-reconciler ARGS` run once against the fleet lab `lab` (its fleet.yaml,
    desired_state, models and state folders), from `lab`, with no TFS_RECONCILER_ variables
    of the caller's; output captured as text, the exit code left to the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    return subprocess.run(
        [
            "tfs-reconciler",
            *args,
            "--fleet",
            str(lab / "fleet.yaml"),
            "--desired",
            str(lab / "desired_state"),
            "--models-dir",
            str(lab / "models"),
            "--state-dir",
            str(lab / "state"),
        ],
        cwd=lab,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_fleet_file(lab: Path, sims: Mapping[str, SimulatorProcess], rollout: str) -> Path:
    """`lab`/fleet.yaml listing the simulators `sims` (by name, each configured by
    replicas/NAME/models.config) with the rollout rules `rollout`, a YAML flow mapping such
    as "{canary: 1, max_parallel: 2}"."""
    rows = "\n".join(
        f"    - {{name: {n}, rest: '{s.rest_url}', grpc: '{s.grpc_target}',"
        f" config: replicas/{n}/models.config}}"
        for n, s in sims.items()
    )
    path = lab / "fleet.yaml"
    path.write_text(
        f"apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n{rows}\n  rollout: {rollout}\n"
    )
    return path
