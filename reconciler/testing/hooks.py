"""Webhook requests as git hosts send them, for tests and the bench.

``github_push`` signs like GitHub and Gitea (``X-Hub-Signature-256: sha256=`` + the hex
HMAC-SHA256 of the raw body under the hook's secret); ``gitlab_push`` carries the secret in
``X-Gitlab-Token`` as GitLab does. ``post`` sends one and returns (status, body).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["gitea_push", "github_ping", "github_push", "gitlab_push", "post", "sign"]

Hook = tuple[dict[str, str], bytes]


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _push_body(ref: str, after: str, before: str = "0" * 40) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": {"full_name": "team/desired-state"},
        "commits": [{"id": after, "message": "promote"}],
    }


def github_push(secret: bytes | None, ref: str, after: str, event: str = "push") -> Hook:
    """A GitHub push event; ``secret`` None: unsigned (a hook registered without one)."""
    body = json.dumps(_push_body(ref, after)).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(secret, body)
    return headers, body


def gitea_push(secret: bytes, ref: str, after: str) -> Hook:
    """A Gitea push event, with only Gitea's own names for the event (Gitea also signs in
    X-Gitea-Signature, the bare hex digest, beside X-Hub-Signature-256)."""
    body = json.dumps(_push_body(ref, after)).encode()
    signature = sign(secret, body)
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": str(uuid.uuid4()),
        "X-Gitea-Signature": signature.removeprefix("sha256="),
        "X-Hub-Signature-256": signature,
    }, body


def github_ping(secret: bytes) -> Hook:
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-Hub-Signature-256": sign(secret, body),
    }, body


def gitlab_push(token: bytes | None, ref: str, after: str) -> Hook:
    body = json.dumps({"object_kind": "push", **_push_body(ref, after)}).encode()
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}
    if token is not None:
        headers["X-Gitlab-Token"] = token.decode()
    return headers, body


def post(
    url: str, headers: Mapping[str, str], body: bytes, timeout: float = 10.0
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
