"""Running the git command line safely on a repository another user may own: git's own
"dubious ownership" check passed for the one repository trusted, every setting of its config
that names a program reset, no hooks, no prompts, a timeout. Every git call goes through
`run_git` (or `read_git_head` for a blob read only far enough)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

# Set by git for hooks and by users; they would point every command at another repository.
_REPOSITORY_VARIABLES = {
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
}


# Keys of a repository's own config (scope local or worktree) that name a program git would
# run, or that decide whether it runs one. The clone may belong to a deploy user, and the
# reconciler typically runs as root: on every call each of these is reset (to the system and
# global values only), so nothing the clone's config names ever runs.
_RUNS_A_PROGRAM = re.compile(
    r"core\.(fsmonitor|hookspath|sshcommand|gitproxy|askpass|pager|editor|alternaterefscommand)"
    r"|credential\.(.*\.)?helper|filter\..*\.(clean|smudge|process|required)"
    r"|diff\.external|diff\..*\.(textconv|command)|merge\..*\.driver|gpg\.(.*\.)?program"
    r"|sequence\.editor|pager\..*|remote\..*\.(uploadpack|receivepack|vcs)",
    re.DOTALL,
)
_UNTRUSTED_SCOPES = {"local", "worktree"}
# Set on every call after the repository's config, so they win: no fsmonitor, no hooks, no
# command transport, no submodule or maintenance work behind a fetch.
_ALWAYS = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", os.devnull),
    ("protocol.ext.allow", "never"),
    ("fetch.recurseSubmodules", "false"),
    ("submodule.recurse", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
)


class GitError(RuntimeError):
    """A git command failed, or the repository is not as the source needs it."""


GIT_TIMEOUT = 120.0
"""Seconds a git command may take (a fetch from an unresponsive remote must not hang the loop)."""


def run_git(
    args: list[str],
    cwd: Path,
    stdin: bytes | None = None,
    check: bool = True,
    trust: Path | None = None,
    base: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run git. `trust` is the one repository the call may read although another user owns
    it (git's "dubious ownership" check would refuse a deploy user's clone); what its config
    names to run is reset first (see _RUNS_A_PROGRAM)."""
    return _git_process([*base, *args], cwd, stdin, check, git_config(cwd, trust, base))


def git_config(cwd: Path, trust: Path | None, base: Sequence[str]) -> list[tuple[str, str]]:
    if trust is None:
        return list(_ALWAYS)
    trusted = [("safe.directory", os.path.realpath(trust))]
    return [*trusted, *_neutralized(base, cwd, [*trusted, *_ALWAYS]), *_ALWAYS]


def _neutralized(
    base: Sequence[str], cwd: Path, config: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Settings that undo each key of `_RUNS_A_PROGRAM` the repository's own config sets:
    the key emptied (which also resets a list, like credential.helper), then given back its
    system and global values, if any."""
    listing = _git_process(
        [*base, "config", "--list", "--show-scope", "--includes", "-z"], cwd, None, True, config
    ).stdout.split(b"\0")
    untrusted: dict[str, None] = {}
    trusted: dict[str, list[str]] = {}
    for scope, entry in zip(listing[0::2], listing[1::2], strict=False):
        key, _, value = entry.decode("utf-8", "surrogateescape").partition("\n")
        if not _RUNS_A_PROGRAM.fullmatch(key):
            continue
        if scope.decode() in _UNTRUSTED_SCOPES:
            untrusted[key] = None
        elif scope.decode() in ("system", "global"):
            trusted.setdefault(key, []).append(value)
    return [
        pair for key in untrusted for pair in [(key, ""), *((key, v) for v in trusted.get(key, []))]
    ]


def _git_process(
    args: list[str],
    cwd: Path,
    stdin: bytes | None,
    check: bool,
    config: list[tuple[str, str]],
) -> subprocess.CompletedProcess[bytes]:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            env=git_environment(config),
            check=False,
            timeout=GIT_TIMEOUT,
        )
    except FileNotFoundError as error:
        raise GitError("the git command is not installed") from error
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} took more than {GIT_TIMEOUT:g} s") from None
    if check and out.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed ({out.returncode}): {out.stderr.decode().strip()}"
        )
    return out


def git_environment(config: list[tuple[str, str]]) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in _REPOSITORY_VARIABLES
        and not k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    env: dict[str, str] = {
        **inherited,
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_OPTIONAL_LOCKS": "0",
        # GIT_CONFIG_KEY_<n>, not -c: a key's subsection may hold '=' (filter."a=b".clean)
        "GIT_CONFIG_COUNT": str(len(config)),
        **{f"GIT_CONFIG_KEY_{i}": key for i, (key, _) in enumerate(config)},
        **{f"GIT_CONFIG_VALUE_{i}": value for i, (_, value) in enumerate(config)},
    }
    return env


def read_git_head(args: list[str], cwd: Path, count: int, base: Sequence[str]) -> bytes:
    """The first ``count`` bytes git writes for ``args``, streamed: git stops when the pipe
    closes (a blob larger than a limit is read only far enough to tell)."""
    config = git_config(cwd, cwd, base)
    try:
        with subprocess.Popen(
            ["git", *base, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=git_environment(config),
        ) as process:
            assert process.stdout is not None
            head = process.stdout.read(count)
            process.kill()
    except FileNotFoundError as error:
        raise GitError("the git command is not installed") from error
    return head
