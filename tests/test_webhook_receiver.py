"""The webhook receiver over real HTTP on loopback: what it answers, counts and announces
(issue 14), and that it survives floods and malformed requests like the metrics endpoint."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from reconciler.http_endpoint import Address
from reconciler.http_server import Limits
from reconciler.testing.flood import Flood
from reconciler.testing.hooks import github_ping, github_push, gitlab_push, post, sign
from reconciler.webhook import PATH, PendingFetch, WebhookMetrics, WebhookReceiver

SECRET = b"s3cret-for-the-hook"
MAIN = "refs/heads/main"
AFTER = "b" * 40


class Harness:
    def __init__(self, limits: Limits) -> None:
        self.registry = CollectorRegistry()
        self.metrics = WebhookMetrics.create(self.registry)
        self.wakes = 0
        self.pending = PendingFetch(self._wake)
        self.receiver = WebhookReceiver(
            Address("127.0.0.1", 0), SECRET, lambda: "main", self.pending, self.metrics, limits
        )

    def _wake(self) -> None:
        self.wakes += 1

    @property
    def url(self) -> str:
        return f"{self.receiver.address.url}{PATH}"

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(f"tfs_reconciler_{name}", labels)
        return found or 0.0


@pytest.fixture
def hooks() -> Iterator[Harness]:
    harness = Harness(Limits(connections=16, idle_timeout=2.0, request_timeout=2.0))
    with harness.receiver:
        yield harness


def test_signed_pushes_announce_a_fetch_and_fold_while_one_waits(hooks: Harness) -> None:
    assert post(hooks.url, *github_push(SECRET, MAIN, AFTER))[0] == 202
    assert post(hooks.url, *gitlab_push(SECRET, MAIN, AFTER))[0] == 202
    assert hooks.wakes == 1 and hooks.value("webhook_coalesced_total") == 1
    assert hooks.pending.take()  # the loop fetches
    assert post(hooks.url, *gitlab_push(SECRET, MAIN, AFTER))[0] == 202
    assert hooks.wakes == 2
    assert hooks.value("webhook_received_total") == 3


def test_a_ping_answers_200_and_announces_nothing(hooks: Harness) -> None:
    assert post(hooks.url, *github_ping(SECRET))[0] == 200
    assert hooks.wakes == 0


@pytest.mark.parametrize(
    ("hook", "status", "reason"),
    [
        (github_push(None, MAIN, AFTER), 401, "unsigned"),
        (github_push(b"not the secret", MAIN, AFTER), 403, "bad_signature"),
        (gitlab_push(b"not the secret", MAIN, AFTER), 403, "bad_signature"),
        (gitlab_push(None, MAIN, AFTER), 401, "unsigned"),
        (github_push(SECRET, "refs/heads/feature", AFTER), 202, "other_branch"),
        (github_push(SECRET, MAIN, AFTER, event="pull_request"), 202, "not_push"),
    ],
)
def test_refused_requests_announce_nothing_and_are_counted_by_reason(
    hooks: Harness, hook: tuple[dict[str, str], bytes], status: int, reason: str
) -> None:
    assert post(hooks.url, *hook)[0] == status
    assert hooks.wakes == 0
    assert hooks.value("webhook_refused_total", reason=reason) == 1


def test_an_oversized_body_is_refused_413_unread_and_counted(hooks: Harness) -> None:
    body = b"{" + b" " * (2 << 20) + b"}"
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET, body)}
    status = 0
    try:
        status = post(hooks.url, headers, body)[0]
    except OSError:  # the server may answer and close before the client sent everything
        status = 413
    assert status == 413
    assert hooks.wakes == 0
    assert hooks.value("webhook_refused_total", reason="too_large") == 1


def test_wrong_path_and_method(hooks: Harness) -> None:
    base = hooks.receiver.address.url
    assert post(f"{base}/metrics", *github_push(SECRET, MAIN, AFTER))[0] == 404
    with socket.create_connection((hooks.receiver.address.host, hooks.receiver.address.port)) as s:
        s.sendall(f"GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(1024).startswith(b"HTTP/1.1 405")
    assert hooks.wakes == 0


def test_malformed_requests_are_refused_and_the_receiver_serves_on(hooks: Harness) -> None:
    address = (hooks.receiver.address.host, hooks.receiver.address.port)
    for raw in (
        b"POST /hooks/git HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /hooks/git HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x00\xff garbage \r\n\r\n",
    ):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(raw)
            answer = sock.recv(4096)
        assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:80]
    assert hooks.wakes == 0
    assert post(hooks.url, *github_push(SECRET, MAIN, AFTER))[0] == 202


def test_a_flood_leaves_room_for_a_signed_push(hooks: Harness) -> None:
    host, port = hooks.receiver.address.host, hooks.receiver.address.port
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{{".encode()
    threads = threading.active_count()
    with Flood(host, port, idle=100, slow=100, head=head) as flood:
        assert threading.active_count() <= threads + 1
        for _attempt in range(50):  # a connection may be evicted before it is read
            try:
                status = post(hooks.url, *github_push(SECRET, MAIN, AFTER))[0]
                break
            except OSError:
                continue
        assert status == 202
        assert flood.still_open() <= 16
    assert hooks.wakes == 1
