"""A lab on loopback: models folder, desired state (optionally a git repo), simulator, daemon.

Everything lives in a temporary folder and talks over 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import EXAMPLE_MODELS, model_name
from reconciler.desired import parse_documents
from reconciler.history import STARTED, Record, read_history
from reconciler.observe import Observed, scan_disk
from reconciler.plan import plan
from reconciler.testing import lab as testing_lab
from reconciler.testing.simulator import free_port
from reconciler.tfs_config import render_config

MODEL = "animals"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}
git = functools.partial(testing_lab.git, env={**os.environ, **GIT_ENV})
EXECUTABLE = str(Path(sys.executable).with_name("tfs-reconciler"))


def desired_yaml(models: Mapping[str, tuple[Sequence[int], Mapping[str, int]]]) -> str:
    lines = ["apiVersion: tfs-reconciler/v1", "models:"]
    for name, (versions, labels) in sorted(models.items()):
        lines.append(f"  {name}:")
        lines.append(f"    versions: [{', '.join(str(v) for v in sorted(versions))}]")
        if labels:
            pairs = ", ".join(f"{k}: {v}" for k, v in sorted(labels.items()))
            lines.append(f"    labels: {{{pairs}}}")
    return "\n".join(lines) + "\n"


def animals(versions: Sequence[int], **labels: int) -> str:
    return desired_yaml({MODEL: (versions, labels)})


@dataclass
class Lab:
    root: Path
    models_dir: Path
    desired_dir: Path
    git: bool = False

    @property
    def desired_file(self) -> Path:
        return self.desired_dir / "state.yaml"

    @property
    def config_path(self) -> Path:
        return self.models_dir / "models.config"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def write_desired(self, text: str) -> None:
        temp = self.desired_file.with_suffix(".tmp")
        temp.write_text(text)
        os.replace(temp, self.desired_file)

    def commit(self, text: str, message: str = "bench") -> None:
        """Write the desired state and commit it (the repo is desired_dir's parent)."""
        self.write_desired(text)
        git(self.root / "repo", "commit", "-q", "-a", "-m", message)

    def config_text(self, desired_text: str) -> str:
        """models.config as `desired_text` asks (what a person editing by hand would write)."""
        desired = parse_documents([(str(self.desired_file), desired_text.encode())])
        base_paths = {m.name: m.base_path for m in desired.models}
        disk = scan_disk(base_paths, "/models", self.models_dir)
        return render_config(plan(desired, Observed(disk, None)).target)

    def render_initial_config(self) -> str:
        """models.config as the desired state asks, written before TFS starts (in sync)."""
        text = self.config_text(self.desired_file.read_text())
        self.config_path.write_text(text)
        return text

    def hand_edit(self, desired_text: str) -> None:
        """Replace models.config the way the lab does it today (atomically)."""
        temp = self.config_path.with_name(".models.config.tmp")
        temp.write_text(self.config_text(desired_text))
        os.replace(temp, self.config_path)

    def cli(self, *args: str, log_level: str = "warning") -> list[str]:
        """`tfs-reconciler apply ...` style argv with this lab's paths."""
        return [
            EXECUTABLE,
            f"--log-level={log_level}",
            *args,
            f"--desired={self.desired_dir}",
            f"--models-dir={self.models_dir}",
            f"--state-dir={self.state_dir}",
        ]


@contextlib.contextmanager
def lab(initial: str, *, git_repo: bool = False, models: int = 0) -> Iterator[Lab]:
    """A lab with the example `animals` model (versions 1-3), or `models` generated models
    (5 versions each, saved_model.pb hard-linked to one copy of the example's) when models > 0.

    Hard links, as a real version folder holds regular files (a symbolic link would be
    resolved at every scan, to check that it stays under the serving root)."""
    with tempfile.TemporaryDirectory(prefix="tfs-bench-") as temp:
        root = Path(temp)
        models_dir = root / "models"
        if models:
            source = models_dir / ".saved-model"
            shutil.copytree(EXAMPLE_MODELS / MODEL / "1", source)
            for index in range(models):
                for version in range(1, 6):
                    folder = models_dir / model_name(index) / str(version)
                    shutil.copytree(source, folder, copy_function=os.link)
        else:
            shutil.copytree(EXAMPLE_MODELS, models_dir, ignore=shutil.ignore_patterns("*.config"))
        if git_repo:
            repo = root / "repo"
            repo.mkdir()
            git(repo, "init", "-q", "-b", "main")
            desired_dir = repo / "desired"
        else:
            desired_dir = root / "desired"
        desired_dir.mkdir()
        the_lab = Lab(root, models_dir, desired_dir, git_repo)
        the_lab.write_desired(initial)
        if git_repo:
            git(root / "repo", "add", "-A")
            git(root / "repo", "commit", "-q", "-m", "initial")
        the_lab.render_initial_config()
        yield the_lab


# --- TFS's REST API, read the way a user would see a change ---------------------------------


def get_json(rest_url: str, path: str, timeout: float = 2.0) -> tuple[int, object]:
    host, port = rest_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        connection.close()


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.005) -> float | None:
    """perf_counter time when `check` first held, None after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            return None
        time.sleep(interval)


# --- the daemon ------------------------------------------------------------------------------


class Daemon:
    """`tfs-reconciler run` as a process; started ready (/readyz 200)."""

    def __init__(self, the_lab: Lab, rest_url: str, grpc_target: str, *args: str) -> None:
        self.metrics_port = free_port()
        self.argv = [
            *the_lab.cli("run", log_level="info"),
            f"--rest-url={rest_url}",
            f"--grpc-target={grpc_target}",
            f"--metrics-addr=127.0.0.1:{self.metrics_port}",
            "--no-verify",
            *args,
        ]
        self.log_path = the_lab.root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def ready(self) -> bool:
        try:
            status, _ = get_json(f"http://127.0.0.1:{self.metrics_port}", "/readyz", 1.0)
        except (OSError, ValueError, http.client.HTTPException):
            return False
        return status == 200

    def start(self, timeout: float = 120.0) -> Daemon:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        process = self.process
        if wait_until(lambda: self.ready() or process.poll() is not None, timeout, 0.05) is None:
            self.stop()
            raise RuntimeError(f"the daemon was not ready in {timeout} s:\n{self.log()[-3000:]}")
        if self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{self.log()[-3000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Daemon:
        return self if self.process is not None else self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def daemon_available() -> bool:
    """Whether this build has `tfs-reconciler run`."""
    done = subprocess.run(
        [EXECUTABLE, "run", "--help"], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def outcomes(state_dir: Path) -> list[Record]:
    """The history's records of finished applies: an apply writes a "started" record ahead of
    its first write, then its outcome under the same id."""
    return [record for record in read_history(state_dir) if record.outcome != STARTED]
