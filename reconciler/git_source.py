"""The desired state as committed in git: the GitOps source.

A ``GitSource`` follows one ref of one repository and reads the desired-state
files as they are in the commit the ref points at, never as they are in the
work tree: an edit counts once it is committed. Two ways to get one:

- ``open_local(desired_path, branch=None)``: ``desired_path`` (a folder or a
  file) lies inside a git work tree; the source follows ``branch`` (default:
  the checked-out one). With ``remote_url`` given, ``fetch()`` brings that
  remote's branch into ``refs/remotes/tfs-reconciler/<branch>`` of the same
  repository and the source reads from there.
- ``open_remote(cache_dir, remote_url, path_in_repo, branch=None)``: a bare
  repository of the daemon's own in ``cache_dir`` mirrors the remote branch,
  like Flux; no local clone is needed.

Every git call is the ``git`` command line (no GitPython). A ``Snapshot``
carries the commit and the files' bytes with their paths relative to the
repository root, ready to be validated and shown in error messages.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reconciler.git_command import GitError, read_git_head, run_git

__all__ = [
    "REMOTE_NAME",
    "GitError",
    "GitSource",
    "Snapshot",
    "open_local",
    "open_remote",
]

MAX_FILE_BYTES = 1024 * 1024
"""Larger YAML files are read only far enough to tell (desired.MAX_FILE_BYTES is the same)."""
MAX_OTHER_BYTES = 16 * 1024 * 1024
"""The same for other files: verify requests (desired_files.MAX_REQUEST_BYTES is the same)."""

REMOTE_NAME = "tfs-reconciler"
"""Remote-tracking refs fetched by the daemon live under refs/remotes/<REMOTE_NAME>/."""

_REGULAR_FILE_MODES = {"100644", "100755"}


@dataclass(frozen=True)
class Snapshot:
    """The desired-state files of one commit.

    ``files`` holds (path relative to the repository root, bytes) pairs,
    sorted by path; ``path`` is the desired-state path the files were read
    from, relative to the root ("" for the whole repository).
    """

    commit: str
    ref: str
    path: str
    files: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class GitSource:
    """One ref of one repository, and the desired-state path inside it.

    ``work_tree`` is None for the daemon's own bare mirror. ``path`` is
    relative to the repository root, in git's (posix) spelling; "" is the root.
    """

    git_dir: Path
    common_dir: Path
    work_tree: Path | None
    path: str
    ref: str
    remote_url: str | None = None

    @property
    def branch(self) -> str:
        """The followed branch's name (on the remote, for a remote source)."""
        return self.ref.removeprefix("refs/heads/").removeprefix(f"refs/remotes/{REMOTE_NAME}/")

    # --- reading ---------------------------------------------------------------

    def resolve(self) -> str:
        """The commit the followed ref points at now."""
        out = self._git(
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{self.ref}^{{commit}}",
            check=False,
        )
        if out.returncode != 0:
            hint = " (not fetched yet: call fetch() first)" if self.remote_url else ""
            raise GitError(f"{self.ref} does not name a commit in {self.common_dir}{hint}")
        return out.stdout.decode().strip()

    def head_commit(self) -> str | None:
        """The commit checked out in the work tree (None in a bare mirror or empty repo)."""
        if self.work_tree is None:
            return None
        out = self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        return out.stdout.decode().strip() or None

    def snapshot(
        self,
        commit: str | None = None,
        max_bytes: int = MAX_FILE_BYTES,
        max_other_bytes: int = MAX_OTHER_BYTES,
    ) -> Snapshot:
        """The committed desired-state files at ``commit`` (default: ``resolve()``).

        Only regular files are read; symbolic links and submodules under the
        path are skipped. Of a file larger than ``max_bytes`` (``max_other_bytes``
        for a file not named *.yaml or *.yml; sizes are read from the object
        header) only the first ``max_bytes + 1`` bytes are
        read: enough to tell it is too large, without holding it in memory.
        Raises GitError when the path is not in that commit.
        """
        commit = self.resolve() if commit is None else commit
        pathspec = [self.path] if self.path else []
        # -l: each blob's size, from its object header, before any content is read
        listing = self._git("ls-tree", "-r", "-l", "-z", "--full-tree", commit, "--", *pathspec)
        entries: list[tuple[str, str]] = []
        heads: dict[str, bytes] = {}
        for record in listing.stdout.split(b"\0"):
            if not record:
                continue
            meta, _, raw_name = record.partition(b"\t")
            mode, kind, oid, size = meta.decode().split()
            if kind == "blob" and mode in _REGULAR_FILE_MODES:
                name = raw_name.decode("utf-8", errors="surrogateescape")
                limit = max_bytes if name.endswith((".yaml", ".yml")) else max_other_bytes
                if size.isdigit() and int(size) > limit:  # "BAD": left to cat-file
                    heads[name] = self._read_head(oid, limit + 1)
                else:
                    entries.append((name, oid))
        if not entries and not heads:
            raise GitError(
                f"{self.path or 'the repository'} holds no files in commit {commit[:12]} "
                f"({self.ref}); is the desired-state path committed?"
            )
        contents = self._read_blobs([oid for _, oid in entries])
        read = zip((name for name, _ in entries), contents, strict=True)
        files = tuple(sorted([*read, *heads.items()]))
        return Snapshot(commit=commit, ref=self.ref, path=self.path, files=files)

    def is_dirty(self, paths: Sequence[str] | None = None) -> bool:
        """Whether the work tree has uncommitted changes (staged, unstaged or
        untracked) under ``paths`` (relative to the root; default: the
        desired-state path). Always False for a bare mirror."""
        if self.work_tree is None:
            return False
        pathspec = list(paths) if paths is not None else ([self.path] if self.path else [])
        out = self._git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *pathspec)
        return bool(out.stdout.strip(b"\0"))

    # --- following a remote ----------------------------------------------------

    def fetch(self) -> str:
        """Fetch the remote branch into the followed ref; returns its commit."""
        if self.remote_url is None:
            raise GitError("this source follows a local branch; there is no remote to fetch")
        branch = self.branch
        self._git(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
            self.remote_url,
            f"+refs/heads/{branch}:{self.ref}",
        )
        return self.resolve()

    # --- what a watcher watches ------------------------------------------------

    def ref_files(self) -> tuple[Path, ...]:
        """The files git rewrites when the followed ref moves: the loose ref,
        packed-refs and HEAD. A watcher on these sees a commit, a fetch, a
        checkout or a ``git gc`` (the loose ref file may not exist yet)."""
        return (
            self.common_dir / self.ref,
            self.common_dir / "packed-refs",
            self.git_dir / "HEAD",
        )

    # --- plumbing --------------------------------------------------------------

    def _read_head(self, oid: str, count: int) -> bytes:
        """The first ``count`` bytes of blob ``oid``, streamed: git stops when the pipe closes."""
        base = ["--git-dir", str(self.git_dir)]
        cwd = self.work_tree if self.work_tree is not None else self.git_dir
        return read_git_head(["cat-file", "blob", oid], cwd, count, base)

    def _read_blobs(self, oids: list[str]) -> list[bytes]:
        out = self._git("cat-file", "--batch", stdin=b"".join(f"{o}\n".encode() for o in oids))
        data, at, contents = out.stdout, 0, []
        for oid in oids:
            header_end = data.index(b"\n", at)
            header = data[at:header_end].decode().split(" ")
            if len(header) != 3 or header[0] != oid or header[1] != "blob":
                raise GitError(
                    f"{self.common_dir} cannot give blob {oid}: git cat-file answered "
                    f"{' '.join(header)!r}; is the repository damaged or shallow?"
                )
            size = header[2]
            start = header_end + 1
            contents.append(data[start : start + int(size)])
            at = start + int(size) + 1
        return contents

    def _git(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        base = ["--git-dir", str(self.git_dir)]
        if self.work_tree is not None:
            base = [*base, "--work-tree", str(self.work_tree)]
        cwd = self.work_tree if self.work_tree is not None else self.git_dir
        return run_git(list(args), cwd=cwd, stdin=stdin, check=check, trust=cwd, base=base)


def open_local(
    desired_path: Path, branch: str | None = None, remote_url: str | None = None
) -> GitSource:
    """A source for ``desired_path`` (folder or file) inside a git work tree.

    ``branch`` defaults to the checked-out branch. With ``remote_url``, the
    source follows ``refs/remotes/tfs-reconciler/<branch>`` filled by ``fetch()``.
    """
    desired_path = desired_path.resolve()
    if not desired_path.exists():
        raise GitError(f"{desired_path} does not exist")
    start = desired_path if desired_path.is_dir() else desired_path.parent
    found = _work_tree_of(start)
    out = run_git(
        [
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-dir",
            "--git-common-dir",
        ],
        cwd=found,
        check=False,
        trust=found,
    )
    if out.returncode != 0:
        raise GitError(
            f"{desired_path} is not inside a git work tree: {out.stderr.decode().strip()}"
        )
    top, git_dir, common_dir = (Path(line) for line in out.stdout.decode().splitlines())
    if branch is None:
        head = run_git(
            ["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=top, check=False, trust=top
        )
        if head.returncode != 0:
            raise GitError(f"HEAD of {top} is detached, so there is no branch to follow; name one")
        branch = head.stdout.decode().strip()
    _check_branch_name(branch, cwd=top)
    relative = desired_path.relative_to(top).as_posix()
    ref = f"refs/remotes/{REMOTE_NAME}/{branch}" if remote_url else f"refs/heads/{branch}"
    return GitSource(
        git_dir=git_dir,
        common_dir=common_dir,
        work_tree=top,
        path="" if relative == "." else relative,
        ref=ref,
        remote_url=remote_url,
    )


def open_remote(
    cache_dir: Path, remote_url: str, path_in_repo: str, branch: str | None = None
) -> GitSource:
    """A source that mirrors ``remote_url`` into a bare repository at ``cache_dir``.

    ``path_in_repo`` is the desired-state path relative to the repository
    root. ``branch`` defaults to the remote's default branch (its HEAD).
    Nothing is fetched yet: call ``fetch()``.
    """
    if not (cache_dir / "HEAD").exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        run_git(["init", "--quiet", "--bare", str(cache_dir)], cwd=cache_dir)
    if branch is None:
        branch = _remote_default_branch(remote_url, cwd=cache_dir)
    _check_branch_name(branch, cwd=cache_dir)
    path = PurePosixPath(path_in_repo.strip("/") or ".").as_posix()
    if path.startswith("../") or path == "..":
        raise GitError(f"{path_in_repo!r} leaves the repository")
    cache = cache_dir.resolve()
    return GitSource(
        git_dir=cache,
        common_dir=cache,
        work_tree=None,
        path="" if path == "." else path,
        ref=f"refs/remotes/{REMOTE_NAME}/{branch}",
        remote_url=remote_url,
    )


def _remote_default_branch(remote_url: str, cwd: Path) -> str:
    out = run_git(["ls-remote", "--symref", "--", remote_url, "HEAD"], cwd=cwd, trust=cwd)
    for line in out.stdout.decode().splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD")
    raise GitError(f"{remote_url} names no default branch; name the branch to follow")


def _work_tree_of(start: Path) -> Path:
    """The work tree holding `start`, found as git would (the nearest folder with a `.git`),
    and trusted only when that `.git` belongs to the folder's owner or to this user: a
    repository someone else planted in a shared folder above the desired state is refused."""
    for folder in (start, *start.parents):
        marker = folder / ".git"
        if not os.path.lexists(marker):
            continue
        owner, holder = os.lstat(marker).st_uid, os.stat(folder).st_uid
        if owner not in (holder, os.geteuid()):
            raise GitError(
                f"{marker} belongs to uid {owner}, but {folder} to uid {holder}: refusing a "
                "repository another user may have planted above the desired state"
            )
        return folder
    raise GitError(f"{start} is not inside a git work tree: no .git in it or above it")


def _check_branch_name(branch: str, cwd: Path) -> None:
    if run_git(["check-ref-format", "--branch", branch], cwd=cwd, check=False).returncode != 0:
        raise GitError(f"{branch!r} is not a valid branch name")
