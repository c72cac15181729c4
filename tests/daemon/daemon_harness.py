"""Run the installed `tfs-reconciler run` as a real process and watch what it says.

- `DaemonProcess`: the console script in a subprocess (own process group), stderr (JSON lines,
  not a TTY) captured to a file and parsed into events; `events()`, `wait_for_event()`,
  `kill(signal)`, `stop()` (SIGTERM, then SIGKILL after a timeout, so no test leaks one).
- `NotifySocket`: an AF_UNIX SOCK_DGRAM socket standing in for systemd's NOTIFY_SOCKET; a
  thread collects every datagram with the time it arrived.
(`LabRepo`, `git`, `wait_until` and `label_version` are reconciler.testing.lab's.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.testing.lab import label_version

MODEL = "animals"

DESIRED_YAML = """\
apiVersion: tfs-reconciler/v1
models:
  animals:
    versions: {versions}
    labels:
{labels}
"""


def desired_text(versions: str, labels: Mapping[str, int]) -> str:
    return DESIRED_YAML.format(
        versions=versions, labels="\n".join(f"      {k}: {v}" for k, v in labels.items())
    )


def add_version(models: Path, number: int, source: int = 3) -> Path:
    """Copy version `source` to `number` under a hidden name, then rename it into place."""
    base = models / MODEL
    hidden = base / f".{number}.tmp"
    shutil.copytree(base / str(source), hidden)
    final = base / str(number)
    hidden.rename(final)
    return final


# --- HTTP -------------------------------------------------------------------------------------


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with OPENER.open(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def label_is(rest_url: str, label: str, version: int) -> Callable[[], bool]:
    """A condition for `wait_until`: `label` resolves to `version`."""
    return lambda: label_version(rest_url, MODEL, label) == version


def commit_is(commit: str) -> Callable[[dict[str, Any]], bool]:
    """A filter for `wait_for_event`: the event names `commit`."""
    return lambda event: event.get("commit") == commit


def version_states(rest_url: str) -> dict[int, str]:
    status, body = http_get(f"{rest_url}/v1/models/{MODEL}")
    assert status == 200, body
    found: dict[int, str] = {}
    for entry in json.loads(body)["model_version_status"]:
        number = int(entry["version"])
        if found.get(number) in (None, "END"):
            found[number] = entry["state"]
    return found


# --- NOTIFY_SOCKET ----------------------------------------------------------------------------


@dataclass
class NotifySocket:
    """A datagram socket like systemd's; `messages` holds (monotonic time, text) pairs."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, folder: Path) -> NotifySocket:
        path = folder / "notify.sock"
        if len(os.fsencode(path)) > 100:  # sun_path is 108 bytes
            path = Path(tempfile.mkdtemp(prefix="sdn-")) / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.1)
        self = cls(path=path, _sock=sock)
        self._thread = threading.Thread(target=self._receive, daemon=True, name="notify")
        self._thread.start()
        return self

    def _receive(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
        self.path.unlink(missing_ok=True)

    def lines(self, key: str) -> list[tuple[float, str]]:
        """Every `KEY=value` line sent, with its arrival time."""
        found = []
        for at, message in list(self.messages):
            for line in message.splitlines():
                name, _, value = line.partition("=")
                if name == key:
                    found.append((at, value))
        return found

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> float:
        """Wait for a KEY(=value) line; returns its arrival time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, got in self.lines(key):
                if value is None or got == value:
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s: {self.messages}")


# --- the daemon process -----------------------------------------------------------------------


class DaemonProcess:
    """`tfs-reconciler run ARGS` with `env` added; stderr parsed as JSON events."""

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
