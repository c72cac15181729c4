"""The git webhook receiver: a signed push to the followed branch fetches at once.

``POST /hooks/git`` on its own address (``--webhook-addr``). What a request asks is decided
by pure functions (``check_signature``, ``judge``, in ``reconciler.webhook_judge``);
``WebhookReceiver`` serves them on a bounded server (``reconciler.http_server``) and calls
``on_push`` for a valid push.

- GitHub and Gitea sign the body: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``; GitLab
  sends the secret itself in ``X-Gitlab-Token``. Both are compared in constant time.
- A push is only a hint that the branch moved: the daemon fetches, and the fetched commit,
  never the body, decides what is applied. Pushes announced while a fetch is waiting fold
  into it (``PendingFetch``): a flood of hooks costs one or two fetches, never a queue.

Status codes: 401 unsigned, 403 wrongly signed, 413 over ``MAX_BODY``, 400 malformed, 404 and
405 for another path or method; 200 for a ping; 202 for a push that fetches, and also for a
signed event that is not a push to the followed branch (ignored, counted as refused): a git
host disables a hook that keeps answering 4xx, and a push to another branch is not an error.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from reconciler.http_endpoint import Address, parse_address
from reconciler.http_server import BoundedHttpServer, Limits, StartResponse
from reconciler.webhook_judge import (
    MAX_BODY,
    PATH,
    REASONS,
    Reason,
    Verdict,
    check_signature,
    judge,
)

__all__ = [
    "MAX_BODY",
    "PATH",
    "REASONS",
    "PendingFetch",
    "Reason",
    "Verdict",
    "WebhookMetrics",
    "WebhookReceiver",
    "WebhookSecretError",
    "check_signature",
    "judge",
    "read_secret",
    "webhook_receiver",
]

log = structlog.get_logger(__name__)

LIMITS = Limits(connections=64, idle_timeout=10.0, request_timeout=10.0, max_body=MAX_BODY)


class WebhookSecretError(ValueError):
    """The secret file cannot be used."""


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret in ``path``, without surrounding whitespace (a trailing newline is usual).
    WebhookSecretError when it cannot be read or is empty; its content is never shown."""
    try:
        info = os.stat(path)
        secret = Path(path).read_bytes().strip()
    except OSError as error:
        raise WebhookSecretError(
            f"cannot read the webhook secret file {path}: {error.strerror}"
        ) from None
    if not secret:
        raise WebhookSecretError(f"the webhook secret file {path} is empty")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("webhook_secret_file_readable_by_others", path=str(path))
    return secret


class PendingFetch:
    """Pushes waiting for a fetch, folded into one: ``announce()`` is True when it asks for a
    fetch (and calls ``wake``), False when one is already waiting; the loop ``take()``s it
    before it fetches, so a push during a pass asks for exactly one more."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._pending = False

    def announce(self) -> bool:
        with self._lock:
            if self._pending:
                return False
            self._pending = True
        self._wake()
        return True

    def take(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, False
            return pending


@dataclass(frozen=True)
class WebhookMetrics:
    received: Counter
    refused: Counter
    coalesced: Counter
    fetches: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WebhookMetrics:
        namespace = "tfs_reconciler"
        refused = Counter(
            "webhook_refused",
            "Hook requests refused or ignored, by reason (none of them fetches).",
            ["reason"],
            namespace=namespace,
            registry=registry,
        )
        for reason in REASONS:
            refused.labels(reason=reason)
        return cls(
            received=Counter(
                "webhook_received",
                "Requests to the webhook receiver, valid or not.",
                namespace=namespace,
                registry=registry,
            ),
            refused=refused,
            coalesced=Counter(
                "webhook_coalesced",
                "Valid pushes folded into a fetch that was already waiting.",
                namespace=namespace,
                registry=registry,
            ),
            fetches=Counter(
                "webhook_fetches",
                "Fetches of --git-remote that a webhook started (the periodic ones not counted).",
                namespace=namespace,
                registry=registry,
            ),
        )


_WAITRESS_ERRORS: dict[str, tuple[Reason, HTTPStatus]] = {
    "RequestEntityTooLarge": ("too_large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
}


class WebhookReceiver:
    """Serves ``POST /hooks/git`` on ``address``; ``pending.announce()`` for each valid push.
    ``branch()`` names the followed branch (read at each request: SIGHUP may change it);
    ``set_secret()`` replaces the secret."""

    def __init__(
        self,
        address: Address,
        secret: bytes,
        branch: Callable[[], str | None],
        pending: PendingFetch,
        metrics: WebhookMetrics,
        limits: Limits = LIMITS,
    ) -> None:
        self._secret = secret
        self._branch = branch
        self._pending = pending
        self._metrics = metrics
        self._server = BoundedHttpServer(
            address.host,
            address.port,
            self._app,
            limits,
            name="tfs-reconciler-webhook",
            on_error=self._refused_by_server,
        )
        self._started = False

    @property
    def metrics(self) -> WebhookMetrics:
        return self._metrics

    def set_secret(self, secret: bytes) -> None:
        self._secret = secret

    def beat(self) -> None:
        """Log the connections closed to bound the server since the last call (one line
        for a flood, not one per connection)."""
        evicted, slow = self._server.shed() if self._started else (0, 0)
        if evicted or slow:
            log.warning("webhook_connections_shed", evicted=evicted, too_slow=slow)

    @property
    def address(self) -> Address:
        host, port = self._server.bound
        return Address(host, port)

    def start(self) -> WebhookReceiver:
        self._server.start()
        self._started = True
        log.info("webhook_started", address=str(self.address), path=PATH)
        return self

    def stop(self) -> None:
        if self._started:
            self._server.stop()
            self._started = False

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        self._metrics.received.inc()
        method = str(environ.get("REQUEST_METHOD", ""))
        path = str(environ.get("PATH_INFO", ""))
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers["content-type"] = str(environ.get("CONTENT_TYPE", ""))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(min(length, MAX_BODY + 1)) if length > 0 else b""
        verdict = judge(method, path, headers, body, self._secret, self._branch())
        client = environ.get("REMOTE_ADDR")
        if verdict.action == "refuse":
            assert verdict.reason is not None
            self._metrics.refused.labels(reason=verdict.reason).inc()
            log.warning(
                "webhook_refused",
                reason=verdict.reason,
                status=verdict.status.value,
                detail=verdict.detail,
                client=client,
                hook_event=verdict.event,
                ref=verdict.ref,
            )
        elif verdict.action == "ping":
            log.info("webhook_ping", client=client)
        elif self._pending.announce():
            log.info("webhook_push", client=client, ref=verdict.ref, hinted=verdict.after)
        else:
            self._metrics.coalesced.inc()
            log.debug("webhook_push_coalesced", client=client, ref=verdict.ref)
        return _answer(start_response, verdict.status, verdict.detail, method == "HEAD")

    def _refused_by_server(self, kind: str, client: Any) -> None:
        reason, status = _WAITRESS_ERRORS.get(kind, ("malformed", HTTPStatus.BAD_REQUEST))
        self._metrics.received.inc()
        self._metrics.refused.labels(reason=reason).inc()
        host = client[0] if isinstance(client, tuple) and client else None
        log.warning("webhook_refused", reason=reason, status=status.value, detail=kind, client=host)


def webhook_receiver(
    address: str | None,
    secret_file: str | None,
    registry: CollectorRegistry,
    branch: Callable[[], str | None],
    pending: PendingFetch,
) -> WebhookReceiver | None:
    """The receiver of ``--webhook-addr`` (None when it is not given), its metrics in
    ``registry``; WebhookSecretError when its secret file is not given, cannot be read or is
    empty."""
    if not address:
        return None
    if not secret_file:
        raise WebhookSecretError("--webhook-addr needs --webhook-secret-file")
    secret = read_secret(secret_file)
    metrics = WebhookMetrics.create(registry)
    return WebhookReceiver(parse_address(address), secret, branch, pending, metrics)


def _answer(
    start_response: StartResponse, status: HTTPStatus, detail: str, head: bool
) -> list[bytes]:
    body = (json.dumps({"status": status.value, "detail": detail}) + "\n").encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append(("Allow", "POST"))
    start_response(f"{status.value} {status.phrase}", headers)
    return [] if head else [body]
