"""What a request to the webhook asks, decided by pure functions: is it signed with the secret
(``check_signature``), and is it a push to the followed branch (``judge``). The receiver
(``reconciler.webhook``) serves them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, get_args
from urllib.parse import parse_qs

PATH = "/hooks/git"
MAX_BODY = 1 << 20

Reason = Literal[
    "not_found",
    "method",
    "too_large",
    "malformed",
    "unsigned",
    "bad_signature",
    "not_push",
    "other_branch",
]
REASONS: tuple[Reason, ...] = get_args(Reason)

Action = Literal["fetch", "ping", "refuse"]


def check_signature(headers: Mapping[str, str], body: bytes, secret: bytes) -> Reason | None:
    """None when the request is signed with ``secret``; else why not. ``headers`` are keyed
    in lower case."""
    signature = headers.get("x-hub-signature-256")
    if signature is not None:  # GitHub, Gitea
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        given = signature.strip().encode("latin-1", "replace")
        return None if hmac.compare_digest(expected, given) else "bad_signature"
    token = headers.get("x-gitlab-token")
    if token is not None:  # GitLab
        given = token.strip().encode("latin-1", "replace")
        return None if hmac.compare_digest(secret, given) else "bad_signature"
    return "unsigned"


@dataclass(frozen=True)
class Verdict:
    """What to do with a request: ``action``, the answer's ``status``, the refusal ``reason``
    (None unless refused), and for the log the ``event``, pushed ``ref`` and ``after``
    commit (a hint only)."""

    action: Action
    status: HTTPStatus
    reason: Reason | None = None
    detail: str = ""
    event: str | None = None
    ref: str | None = None
    after: str | None = None


def judge(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: bytes,
    branch: str | None,
) -> Verdict:
    """The verdict on one request; ``branch`` is the followed branch (None: not known yet,
    so any push fetches)."""
    if path != PATH:
        return _refuse(HTTPStatus.NOT_FOUND, "not_found", f"only {PATH} is served here")
    if method != "POST":
        return _refuse(HTTPStatus.METHOD_NOT_ALLOWED, "method", f"{PATH} takes POST")
    if len(body) > MAX_BODY:
        return _refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large", f"over {MAX_BODY} bytes")
    unsigned = _signature_refusal(headers, body, secret)
    if unsigned is not None:
        return unsigned
    event = _cut(headers.get("x-github-event") or headers.get("x-gitea-event"))
    gitlab = _cut(headers.get("x-gitlab-event"))
    if event == "ping":
        return Verdict("ping", HTTPStatus.OK, event=event, detail="pong")
    payload = _payload(headers, body)
    if payload is None:
        return _refuse(HTTPStatus.BAD_REQUEST, "malformed", "the body is not a JSON object")
    if not _is_push(event, gitlab, payload):
        return _refuse(
            HTTPStatus.ACCEPTED, "not_push", "ignored: not a push", event=event or gitlab
        )
    ref, after = payload.get("ref"), payload.get("after")
    if not isinstance(ref, str):
        return _refuse(HTTPStatus.BAD_REQUEST, "malformed", "a push without a ref")
    hint = _cut(after) if isinstance(after, str) else None
    if branch is not None and ref != f"refs/heads/{branch}":
        ref = _cut(ref) or ""
        return _refuse(
            HTTPStatus.ACCEPTED,
            "other_branch",
            f"ignored: a push to {ref}, not refs/heads/{branch}",
            event=event or gitlab,
            ref=ref,
            after=hint,
        )
    return Verdict(
        "fetch", HTTPStatus.ACCEPTED, detail="fetching", event=event or gitlab, ref=ref, after=hint
    )


def _signature_refusal(headers: Mapping[str, str], body: bytes, secret: bytes) -> Verdict | None:
    unsigned = check_signature(headers, body, secret)
    if unsigned == "unsigned":
        return _refuse(
            HTTPStatus.UNAUTHORIZED,
            unsigned,
            "no X-Hub-Signature-256 (GitHub, Gitea) or X-Gitlab-Token (GitLab)",
        )
    if unsigned is not None:
        return _refuse(HTTPStatus.FORBIDDEN, unsigned, "the signature does not match the secret")
    return None


def _is_push(event: str | None, gitlab: str | None, payload: dict[str, Any]) -> bool:
    """GitHub and Gitea name a push `push`; GitLab `Push Hook`, or `System Hook` with a push
    object."""
    return event == "push" or (
        gitlab is not None
        and (
            gitlab == "Push Hook"
            or (gitlab == "System Hook" and payload.get("object_kind") == "push")
        )
    )


def _cut(text: str | None, limit: int = 200) -> str | None:
    """At most `limit` characters of what a request said, for an answer or a log line."""
    return text if text is None or len(text) <= limit else text[:limit] + "...(cut)"


def _refuse(
    status: HTTPStatus,
    reason: Reason,
    detail: str,
    event: str | None = None,
    ref: str | None = None,
    after: str | None = None,
) -> Verdict:
    return Verdict("refuse", status, reason, detail, event, ref, after)


def _payload(headers: Mapping[str, str], body: bytes) -> dict[str, Any] | None:
    """The event's JSON object; GitHub can also send it form-encoded as ``payload=``."""
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except ValueError:
            return None
        texts = fields.get("payload")
        if not texts:
            return None
        body = texts[0].encode()
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
