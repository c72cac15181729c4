"""The webhook's judgement, as pure functions: signatures, events, branches (issue 14)."""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path
from urllib.parse import quote

import pytest

from reconciler.testing.hooks import gitea_push, github_ping, github_push, gitlab_push, sign
from reconciler.webhook import (
    MAX_BODY,
    PATH,
    PendingFetch,
    Verdict,
    WebhookSecretError,
    check_signature,
    judge,
    read_secret,
)

SECRET = b"It's a Secret to Everybody"
MAIN = "refs/heads/main"
AFTER = "a" * 40


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verdict_of(hook: tuple[dict[str, str], bytes], branch: str | None = "main") -> Verdict:
    headers, body = hook
    return judge("POST", PATH, lower(headers), body, SECRET, branch)


def test_github_documents_this_signature() -> None:
    """The example of GitHub's "Validating webhook deliveries": secret "It's a Secret to
    Everybody", payload "Hello, World!"."""
    assert sign(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
    headers = {"x-hub-signature-256": sign(SECRET, b"Hello, World!")}
    assert check_signature(headers, b"Hello, World!", SECRET) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "unsigned"),
        ({"x-hub-signature-256": sign(b"another secret", b"{}")}, "bad_signature"),
        ({"x-hub-signature-256": sign(SECRET, b"{ }")}, "bad_signature"),  # another body
        ({"x-hub-signature-256": sign(SECRET, b"{}")[7:]}, "bad_signature"),  # no sha256=
        ({"x-hub-signature-256": ""}, "bad_signature"),
        ({"x-hub-signature-256": "sha256=é"}, "bad_signature"),
        ({"x-gitlab-token": "It's a secret"}, "bad_signature"),
        ({"x-gitlab-token": ""}, "bad_signature"),
        ({"x-hub-signature": "sha1=0000"}, "unsigned"),  # SHA-1 only: not accepted
        ({"x-hub-signature-256": sign(SECRET, b"{}")}, None),
        ({"x-gitlab-token": SECRET.decode()}, None),
    ],
)
def test_signatures(headers: dict[str, str], expected: str | None) -> None:
    assert check_signature(headers, b"{}", SECRET) == expected


def test_a_signed_push_to_the_followed_branch_fetches() -> None:
    for hook in (github_push(SECRET, MAIN, AFTER), gitlab_push(SECRET, MAIN, AFTER)):
        verdict = verdict_of(hook)
        assert (verdict.action, verdict.status) == ("fetch", HTTPStatus.ACCEPTED)
        assert verdict.after == AFTER  # a hint for the log; the fetch decides


def test_a_gitea_push_is_known_by_gitea_s_own_event_header() -> None:
    hook = gitea_push(SECRET, MAIN, AFTER)
    assert "X-GitHub-Event" not in hook[0]
    verdict = verdict_of(hook)
    assert (verdict.action, verdict.status) == ("fetch", HTTPStatus.ACCEPTED)
    assert verdict_of(gitea_push(b"another secret", MAIN, AFTER)).status == HTTPStatus.FORBIDDEN
    assert verdict_of(gitea_push(SECRET, "refs/heads/dev", AFTER)).action != "fetch"


def test_github_may_send_the_payload_form_encoded() -> None:
    headers, body = github_push(SECRET, MAIN, AFTER)
    form = b"payload=" + quote(body.decode()).encode()
    headers = {
        **headers,
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Hub-Signature-256": sign(SECRET, form),
    }
    assert verdict_of((headers, form)).action == "fetch"


@pytest.mark.parametrize(
    ("hook", "status", "reason"),
    [
        (github_push(None, MAIN, AFTER), HTTPStatus.UNAUTHORIZED, "unsigned"),
        (gitlab_push(None, MAIN, AFTER), HTTPStatus.UNAUTHORIZED, "unsigned"),
        (github_push(b"wrong", MAIN, AFTER), HTTPStatus.FORBIDDEN, "bad_signature"),
        (gitlab_push(b"wrong", MAIN, AFTER), HTTPStatus.FORBIDDEN, "bad_signature"),
        (github_push(SECRET, "refs/heads/dev", AFTER), HTTPStatus.ACCEPTED, "other_branch"),
        (gitlab_push(SECRET, "refs/tags/v1", AFTER), HTTPStatus.ACCEPTED, "other_branch"),
        (github_push(SECRET, MAIN, AFTER, "issues"), HTTPStatus.ACCEPTED, "not_push"),
    ],
)
def test_refusals(hook: tuple[dict[str, str], bytes], status: HTTPStatus, reason: str) -> None:
    verdict = verdict_of(hook)
    assert (verdict.action, verdict.status, verdict.reason) == ("refuse", status, reason)


def test_a_ping_is_answered_200_and_fetches_nothing() -> None:
    verdict = verdict_of(github_ping(SECRET))
    assert (verdict.action, verdict.status) == ("ping", HTTPStatus.OK)


def test_an_unsigned_ping_is_refused() -> None:
    headers, body = github_ping(SECRET)
    del headers["X-Hub-Signature-256"]
    assert verdict_of((headers, body)).reason == "unsigned"


def test_the_signature_is_checked_before_the_body_is_read() -> None:
    verdict = judge("POST", PATH, {"x-github-event": "push"}, b"not json", SECRET, "main")
    assert verdict.reason == "unsigned"


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'"push"', b"[" * 100_000, json.dumps({"after": AFTER}).encode()]
)
def test_a_signed_malformed_push_is_refused_400(body: bytes) -> None:
    headers = {"x-github-event": "push", "x-hub-signature-256": sign(SECRET, body)}
    verdict = judge("POST", PATH, headers, body, SECRET, "main")
    assert (verdict.status, verdict.reason) == (HTTPStatus.BAD_REQUEST, "malformed")


def test_other_paths_methods_and_sizes() -> None:
    headers, body = github_push(SECRET, MAIN, AFTER)
    assert judge("POST", "/", lower(headers), body, SECRET, "main").reason == "not_found"
    assert judge("GET", PATH, lower(headers), body, SECRET, "main").reason == "method"
    big = b" " * (MAX_BODY + 1)
    too_large = judge("POST", PATH, {"x-hub-signature-256": sign(SECRET, big)}, big, SECRET, None)
    assert (too_large.status, too_large.reason) == (
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "too_large",
    )


def test_pushes_waiting_for_a_fetch_fold_into_one() -> None:
    wakes: list[int] = []
    pending = PendingFetch(lambda: wakes.append(1))
    assert pending.announce() is True
    assert [pending.announce() for _ in range(50)] == [False] * 50
    assert wakes == [1]
    assert pending.take() is True
    assert pending.take() is False
    assert pending.announce() is True  # a push during the pass asks for one more
    assert wakes == [1, 1]


def test_the_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    assert read_secret(path) == SECRET
    path.write_text(" \n")
    with pytest.raises(WebhookSecretError, match="is empty"):
        read_secret(path)
    with pytest.raises(WebhookSecretError, match="cannot read"):
        read_secret(tmp_path / "missing")
    with pytest.raises(WebhookSecretError, match="cannot read"):
        read_secret(tmp_path)  # a folder


def test_what_a_request_says_is_cut_short_in_answers_and_logs() -> None:
    verdict = verdict_of(github_push(SECRET, "refs/heads/" + "x" * 100_000, "f" * 100_000))
    assert verdict.reason == "other_branch"
    assert len(verdict.detail) < 300
    assert verdict.ref is not None and len(verdict.ref) < 300
    assert verdict.after is not None and len(verdict.after) < 300
