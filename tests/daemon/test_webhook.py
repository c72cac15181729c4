"""The daemon's webhook receiver end to end (issue 14): a bare repository on this machine is
the remote, a developer's clone pushes to it, and a client posts push events signed (and
missigned) as GitHub and GitLab sign them. Deadlines are generous; no duration is asserted
(bench/ measures push-to-live)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.testing.hooks import github_ping, github_push, gitlab_push, post
from reconciler.testing.lab import GIT_IDENTITY, LabRepo, git, label_version, wait_until
from reconciler.webhook import PATH

from .conftest import StartDaemon, StartSim
from .daemon_harness import (
    MODEL,
    DaemonProcess,
    desired_text,
)

pytestmark = pytest.mark.integration

SECRET = b"a webhook secret, only in a file"
MAIN = "refs/heads/main"
PROMOTED = {"deprecated": 1, "stable": 3, "canary": 3}
BACK = {"deprecated": 1, "stable": 2, "canary": 3}


@dataclass
class Remote:
    bare: Path
    dev: Path
    secret_file: Path

    def push(self, labels: dict[str, int], message: str) -> str:
        """Commit `labels` in the developer's clone and push them, as a developer does."""
        (self.dev / "desired_state" / "animals.yaml").write_text(desired_text("[1, 2, 3]", labels))
        git(self.dev, "add", "desired_state")
        git(self.dev, *GIT_IDENTITY, "commit", "--quiet", "-m", message)
        git(self.dev, "push", "--quiet", "origin", "main")
        return git(self.dev, "rev-parse", "HEAD")


@pytest.fixture
def remote(repo: LabRepo, tmp_path: Path) -> Remote:
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo.root), str(bare))
    dev = tmp_path / "dev"
    git(tmp_path, "clone", "--quiet", str(bare), str(dev))
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    return Remote(bare, dev, secret_file)


def start_with_webhook(
    start_sim: StartSim, start_daemon: StartDaemon, remote: Remote, *args: str
) -> tuple[DaemonProcess, str, str]:
    """The daemon following `remote` with the receiver on; (daemon, hook URL, REST URL)."""
    sim = start_sim()
    daemon = start_daemon(
        "--git-remote", str(remote.bare),
        "--webhook-addr", "127.0.0.1:0",
        "--webhook-secret-file", str(remote.secret_file),
        *args,
        rest_url=sim.rest_url,
        grpc_target=sim.grpc_target,
    )  # fmt: skip
    started = daemon.wait_for_event("webhook_started")
    daemon.wait_for_event("reconciled")
    return daemon, f"http://{started['address']}{PATH}", sim.rest_url


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{daemon.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"tfs_reconciler_{name}" and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in /metrics")


def test_a_signed_push_is_live_at_once_and_unsigned_or_missigned_hooks_fetch_nothing(
    start_sim: StartSim, start_daemon: StartDaemon, remote: Remote
) -> None:
    # --git-interval 600: within this test only a hook can make the daemon fetch.
    daemon, url, rest_url = start_with_webhook(
        start_sim, start_daemon, remote, "--git-interval", "600"
    )
    assert label_version(rest_url, MODEL, "stable") == 2
    assert post(url, *github_ping(SECRET))[0] == 200

    pushed = remote.push(PROMOTED, "promote 3 to stable")
    for hook, status in [
        (github_push(None, MAIN, pushed), 401),
        (gitlab_push(None, MAIN, pushed), 401),
        (github_push(b"a guess", MAIN, pushed), 403),
        (gitlab_push(b"a guess", MAIN, pushed), 403),
        (github_push(SECRET, "refs/heads/feature", pushed), 202),  # ignored
    ]:
        assert post(url, *hook)[0] == status
    daemon.wait_for_event("webhook_refused", lambda e: e.get("reason") == "other_branch")
    assert metric(daemon, "webhook_fetches_total") == 0
    assert metric(daemon, "webhook_refused_total", reason="unsigned") == 2
    assert metric(daemon, "webhook_refused_total", reason="bad_signature") == 2
    assert not [e for e in daemon.events("fetched") if e.get("trigger") == "webhook"]
    assert label_version(rest_url, MODEL, "stable") == 2

    # GitHub's signed push: fetched and live. The body's commit is only a hint.
    started = time.monotonic()
    assert post(url, *github_push(SECRET, MAIN, "0" * 40))[0] == 202
    wait_until(lambda: label_version(rest_url, MODEL, "stable") == 3, 30, what="GitHub push live")
    print(f"\nGitHub push to live through the webhook: {time.monotonic() - started:.3f} s")
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == pushed)

    # GitLab's, with its token.
    back = remote.push(BACK, "back to 2")
    started = time.monotonic()
    assert post(url, *gitlab_push(SECRET, MAIN, back))[0] == 202
    wait_until(lambda: label_version(rest_url, MODEL, "stable") == 2, 30, what="GitLab push live")
    print(f"GitLab push to live through the webhook: {time.monotonic() - started:.3f} s")
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == back)
    assert metric(daemon, "webhook_fetches_total") == 2
    assert metric(daemon, "webhook_received_total") == 8


def test_a_flood_of_signed_hooks_costs_one_or_two_fetches(
    start_sim: StartSim, start_daemon: StartDaemon, remote: Remote
) -> None:
    daemon, url, rest_url = start_with_webhook(
        start_sim, start_daemon, remote, "--git-interval", "600", "--resync", "600"
    )
    pushed = remote.push(PROMOTED, "promote")
    mark = daemon.count()
    hooks = 60
    requests = [github_push(SECRET, MAIN, pushed) for _ in range(hooks)]
    burst = threading.Barrier(hooks)  # all at once, as a host retrying a backlog would

    def send(hook: tuple[dict[str, str], bytes]) -> int:
        burst.wait(30)
        return post(url, *hook)[0]

    with ThreadPoolExecutor(max_workers=hooks) as pool:
        statuses = list(pool.map(send, requests))
    assert statuses == [202] * hooks
    wait_until(lambda: label_version(rest_url, MODEL, "stable") == 3, 30, what="push live")
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == pushed, after=mark)
    wait_until(
        lambda: (
            metric(daemon, "webhook_coalesced_total") + metric(daemon, "webhook_fetches_total")
            == hooks
        ),
        30,
        what="every hook fetched or folded",
    )
    fetches = metric(daemon, "webhook_fetches_total")
    passes = len(
        [e for e in daemon.events()[mark:] if e.get("event") in ("reconciled", "reconcile_failed")]
    )
    print(f"\n{hooks} hooks: {fetches:.0f} fetches, {passes} passes")
    assert 1 <= fetches <= 2


def test_a_lost_hook_is_caught_up_by_the_periodic_fetch(
    start_sim: StartSim, start_daemon: StartDaemon, remote: Remote
) -> None:
    daemon, _url, rest_url = start_with_webhook(
        start_sim, start_daemon, remote, "--git-interval", "1"
    )
    pushed = remote.push(PROMOTED, "promote, no hook")
    wait_until(
        lambda: label_version(rest_url, MODEL, "stable") == 3, 30, what="push live by polling"
    )
    daemon.wait_for_event("reconciled", lambda e: e.get("commit") == pushed)
    assert metric(daemon, "webhook_fetches_total") == 0


def test_sighup_reads_the_secret_file_again(
    start_sim: StartSim, start_daemon: StartDaemon, remote: Remote
) -> None:
    daemon, url, _rest_url = start_with_webhook(
        start_sim, start_daemon, remote, "--git-interval", "600"
    )
    remote.secret_file.write_bytes(b"the rotated secret\n")
    mark = daemon.count()
    daemon.kill(__import__("signal").SIGHUP)
    daemon.wait_for_event("settings_reloaded", after=mark)
    assert post(url, *github_push(SECRET, MAIN, "0" * 40))[0] == 403
    assert post(url, *github_push(b"the rotated secret", MAIN, "0" * 40))[0] == 202


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        (["--webhook-secret-file", "{missing}"], {}, "cannot read the webhook secret file"),
        (["--webhook-secret-file", "{empty}"], {}, "is empty"),
        ([], {}, "--webhook-addr needs --webhook-secret-file"),
        (["--webhook-secret-file", "{empty}"], {"WEBHOOK_ADDR": "nowhere"}, "bad address"),
        (["--git-remote", ""], {"WEBHOOK_SECRET_FILE": "{empty}"}, "needs --git-remote"),
    ],
)
def test_the_daemon_refuses_to_start_without_a_usable_secret_or_address(
    repo: LabRepo,
    remote: Remote,
    tmp_path: Path,
    extra: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    """Options come from TFS_RECONCILER_* as well; the secret never shows in an error."""
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    places = {"missing": tmp_path / "nope", "empty": empty}
    args = [a.format(**places) for a in extra]
    variables = {f"TFS_RECONCILER_{k}": v.format(**places) for k, v in env.items()}
    base = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    out = subprocess.run(
        [
            "tfs-reconciler", "run",
            "--desired", str(repo.desired), "--models-dir", str(repo.models),
            "--git-remote", str(remote.bare), "--metrics-addr", "127.0.0.1:0",
            *([] if "WEBHOOK_ADDR" in env else ["--webhook-addr", "127.0.0.1:0"]), *args,
        ],
        capture_output=True, text=True, timeout=60, cwd=repo.root, stdin=subprocess.DEVNULL,
        env={**base, "TFS_RECONCILER_WEBHOOK_ADDR": "127.0.0.1:0", **variables},
    )  # fmt: skip
    assert out.returncode == 1, out
    assert expected in out.stderr + out.stdout
