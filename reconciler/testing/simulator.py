"""Run the TFS simulator as a real process from tests (like ``kopf.testing.KopfRunner``).

::

    from reconciler.testing import SimulatorProcess

    with SimulatorProcess(models_dir, poll_seconds=0.5, load_seconds=0.2) as tfs:
        requests.get(f"{tfs.rest_url}/v1/models/animals")
        grpc.insecure_channel(tfs.grpc_target)
    print(tfs.log)  # everything the simulator wrote to stderr (one line per event)

The process is ``python -m reconciler.testing.tfs_sim`` on two free loopback ports. Entering
the context (or :meth:`SimulatorProcess.start`) returns once REST answers, which, as with TFS,
is after the first config's models have loaded. If the process exits first (e.g. a label on
an unloaded version without ``allow_labels_for_unavailable``), :class:`SimulatorExited` is
raised with its exit code and log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self


class SimulatorError(RuntimeError):
    """The simulator did not start or stop as expected; ``log`` holds its output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n--- simulator log ---\n{log}")
        self.log = log


class SimulatorExited(SimulatorError):
    """The simulator process ended before it was ready; ``returncode`` says how."""

    def __init__(self, returncode: int, log: str) -> None:
        super().__init__(f"the simulator exited with code {returncode} before it was ready", log)
        self.returncode = returncode


PORT_ATTEMPTS = 5
PORT_IN_USE = "Address already in use"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SimulatorProcess:
    """A ``tfs-sim`` process serving ``models_dir``; a context manager.

    Args:
        models_dir: the host folder that plays TFS's ``/models``: config paths under
            ``container_models_dir`` are read from here (``--sim_path_map``), so the lab's
            ``base_path: '/models/animals/'`` works unchanged.
        config_file: the models.config to serve (``--model_config_file``); default
            ``models_dir / "models.config"`` if that exists, else none (then pass
            ``--model_name``/``--model_base_path`` in ``extra_args`` for single-model mode).
        poll_seconds: ``--model_config_file_poll_wait_seconds`` (0: read once at start).
        file_system_poll_seconds: ``--file_system_poll_wait_seconds``.
        allow_labels_for_unavailable: ``--allow_version_labels_for_unavailable_models``
            (default True, as in the lab's command line).
        load_seconds: ``--sim_load_seconds``, the time every version load takes.
        extra_args: more flags, e.g. ``["--sim_load_seconds_for=animals:3=2.0",
            "--max_num_load_retries=0"]``.
        container_models_dir: the path the config's base paths use for ``models_dir``.
        startup_timeout: seconds to wait for REST to answer in :meth:`start`.
    """

    def __init__(
        self,
        models_dir: Path,
        config_file: Path | None = None,
        *,
        poll_seconds: float = 0.0,
        file_system_poll_seconds: float = 1.0,
        allow_labels_for_unavailable: bool = True,
        load_seconds: float = 0.0,
        extra_args: Sequence[str] = (),
        container_models_dir: str = "/models",
        startup_timeout: float = 30.0,
    ) -> None:
        self.models_dir = Path(models_dir).resolve()
        default_config = self.models_dir / "models.config"
        self.config_file: Path | None = (
            Path(config_file)
            if config_file
            else (default_config if default_config.exists() else None)
        )
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.startup_timeout = startup_timeout
        allow = "true" if allow_labels_for_unavailable else "false"
        self.args: list[str] = [
            sys.executable, "-m", "reconciler.testing.tfs_sim",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *([f"--model_config_file={self.config_file}"] if self.config_file else []),
            f"--model_config_file_poll_wait_seconds={poll_seconds}",
            f"--file_system_poll_wait_seconds={file_system_poll_seconds}",
            f"--allow_version_labels_for_unavailable_models={allow}",
            f"--sim_load_seconds={load_seconds}",
            f"--sim_path_map={container_models_dir}={self.models_dir}",
            *extra_args,
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_text: str | None = None

    # --- where it listens -----------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        """``127.0.0.1:PORT``, for ``grpc.insecure_channel``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """None while running (or not started)."""
        return self._process.poll() if self._process is not None else None

    @property
    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._log_text is not None:
            return self._log_text
        if self._log_file is None:
            return ""
        return Path(self._log_file.name).read_text(encoding="utf-8", errors="replace")

    # --- life -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the process and wait until its REST API answers.

        A port found free can be taken by another process before the simulator binds it; such
        a start is tried again on new ports, a few times.
        """
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start_once()
            except SimulatorExited as exited:
                if PORT_IN_USE not in exited.log or attempt == PORT_ATTEMPTS - 1:
                    raise
                self._process, self._log_file, self._log_text = None, None, None
                self._take_new_ports()
        raise AssertionError("unreachable")

    def _take_new_ports(self) -> None:
        old_grpc, old_rest = f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}"
        self.rest_port, self.grpc_port = free_port(), free_port()
        new = {old_grpc: f"--port={self.grpc_port}", old_rest: f"--rest_api_port={self.rest_port}"}
        self.args = [new.get(arg, arg) for arg in self.args]

    def _start_once(self) -> Self:
        if self._process is not None:
            raise RuntimeError("SimulatorProcess already started")
        self._log_file = tempfile.NamedTemporaryFile(prefix="tfs-sim-", suffix=".log", delete=False)  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._process = subprocess.Popen(
            self.args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + self.startup_timeout
        while not self._rest_answers():
            code = self._process.poll()
            if code is not None:
                self._close_log()
                raise SimulatorExited(code, self.log)
            if time.monotonic() > deadline:
                log = self.log
                self.stop()
                raise SimulatorError(f"REST did not answer within {self.startup_timeout}s", log)
            time.sleep(0.05)
        return self

    def _rest_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.rest_url}/v1/models/-", timeout=1):
                return True
        except urllib.error.HTTPError as answer:
            answer.close()
            return True  # any HTTP answer (404 here) means the server is up
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGTERM and wait; the exit code. Safe to call twice.

        After ``timeout`` seconds the process gets SIGUSR1 (its threads' stacks go to the log)
        and then SIGKILL.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGUSR1)  # the simulator dumps its threads to the log
                time.sleep(0.5)
                process.kill()
                process.wait()
        self._close_log()
        return process.returncode

    def _close_log(self) -> None:
        if self._log_file is not None and self._log_text is None:
            self._log_file.close()
            path = Path(self._log_file.name)
            self._log_text = path.read_text(encoding="utf-8", errors="replace")
            path.unlink(missing_ok=True)

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The simulator's event log after ``since`` (``GET /sim/events``: version states,
        labels and reloads, each with ``seq`` and ``t``; see :mod:`.tfs_sim.events`)."""
        url = f"{self.rest_url}/sim/events?since={since}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            events: list[dict[str, Any]] = json.load(answer)["events"]
            return events

    def wait_for_log(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match[str]:
        """Wait until the log (from character ``after``) matches the regex ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.log, after)
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise SimulatorError(f"no log line matched {pattern!r} within {timeout}s", self.log)
            time.sleep(0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
