"""A lab for tests and benchmarks of a reconciler: the desired state in a git repository, and
the small helpers every such test needs (one of each in this project).

- `git(cwd, *args)`: run git, fail with its stderr;
- `LabRepo`: the lab (models/ and desired_state/) in a git work tree, desired_state/ committed;
- `wait_until(condition, timeout)`: poll until truthy, fail after a deadline;
- `label_version(rest_url, model, label)`: where TFS's REST API resolves a label now.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

GIT_IDENTITY = (
    "-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false",
)  # fmt: skip


class GitFailed(AssertionError):
    """A git command of a test's setup failed (its stderr is the message)."""


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """`git ARGS` in `cwd` (with `env` as its whole environment if given); its stdout, stripped.
    GitFailed (an AssertionError, so a test reports it as a failure) when git fails."""
    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if out.returncode != 0:
        raise GitFailed(f"git {' '.join(args)}: {out.stderr}")
    return out.stdout.strip()


@dataclass
class LabRepo:
    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def desired(self) -> Path:
        return self.root / "desired_state"

    @property
    def config(self) -> Path:
        return self.models / "models.config"

    def write(self, text: str, name: str = "animals.yaml") -> Path:
        path = self.desired / name
        path.write_text(text)
        return path

    def commit(self, message: str, *paths: str) -> str:
        git(self.root, "add", "--all", "--", *(paths or ("desired_state",)))
        git(self.root, *GIT_IDENTITY, "commit", "--quiet", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    @classmethod
    def create(cls, root: Path, lab: Path) -> LabRepo:
        """A copy of the lab folder `lab` (models/, desired_state/) at `root`, made a git work
        tree with desired_state/ committed (models/ ignored)."""
        shutil.copytree(lab, root, dirs_exist_ok=True)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (root / ".gitignore").write_text("models/\n")
        git(root, "init", "--quiet", "--initial-branch=main")
        repo = cls(root)
        repo.commit("lab desired state", "desired_state", ".gitignore")
        return repo


def wait_until(
    condition: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = ""
) -> float:
    """Poll `condition` until truthy; returns the seconds it took. AssertionError on timeout
    (a deadline to fail by, never a duration to assert)."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        time.sleep(interval)


def label_version(rest_url: str, model: str, label: str, timeout: float = 2.0) -> int | None:
    """The version TFS resolves `label` of `model` to now (its label metadata API); None when
    the label does not resolve or TFS does not answer. No proxy: the lab is on loopback."""
    address = urlsplit(rest_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=timeout)
    try:
        connection.request("GET", f"/v1/models/{model}/labels/{label}/metadata")
        reply = connection.getresponse()
        body = reply.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    if reply.status != 200:
        return None
    try:
        version = json.loads(body)["model_spec"]["version"]
    except (ValueError, KeyError, TypeError):
        return None
    return int(version)
