"""The GitOps source, read from real git repositories in tmp folders."""

from __future__ import annotations

import functools
import os
import tracemalloc
from pathlib import Path

import pytest

from reconciler.desired import MAX_FILE_BYTES as DESIRED_MAX
from reconciler.desired_files import MAX_REQUEST_BYTES
from reconciler.git_source import (
    MAX_FILE_BYTES,
    MAX_OTHER_BYTES,
    REMOTE_NAME,
    GitError,
    open_local,
    open_remote,
)
from reconciler.testing import lab

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
git = functools.partial(lab.git, env=GIT_ENV)


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def commit(repo: Path, files: dict[str, str | bytes], message: str = "change") -> str:
    for name, text in files.items():
        write(repo / name, text)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A work tree on branch main with a desired-state folder and an unrelated one."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet", "--initial-branch=main")
    commit(
        root,
        {
            "desired_state/animals.yaml": "model: animals\nversions: [1]\n",
            "desired_state/plants.yaml": "model: plants\n",
            "docs/README.md": "not desired state\n",
        },
        "first",
    )
    return root


def test_snapshot_reads_the_committed_files_under_the_desired_path(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    snapshot = source.snapshot()
    assert snapshot.commit == git(repo, "rev-parse", "HEAD")
    assert snapshot.ref == "refs/heads/main"
    assert snapshot.path == "desired_state"
    assert snapshot.files == (
        ("desired_state/animals.yaml", b"model: animals\nversions: [1]\n"),
        ("desired_state/plants.yaml", b"model: plants\n"),
    )


def test_uncommitted_edits_are_not_read_but_make_the_tree_dirty(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    assert not source.is_dirty()
    write(repo / "desired_state/animals.yaml", "model: animals\nversions: [1, 2]\n")
    write(repo / "desired_state/new.yaml", "model: new\n")
    files = dict(source.snapshot().files)
    assert files["desired_state/animals.yaml"] == b"model: animals\nversions: [1]\n"
    assert "desired_state/new.yaml" not in files
    assert source.is_dirty()


def test_dirtiness_is_judged_under_the_paths_asked_about(repo: Path) -> None:
    write(repo / "docs/README.md", "edited\n")
    source = open_local(repo / "desired_state")
    assert not source.is_dirty()
    assert source.is_dirty(["docs"])


def test_a_new_commit_is_read_once_made(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    before = source.resolve()
    after = commit(repo, {"desired_state/animals.yaml": "model: animals\nversions: [2]\n"})
    assert before != after
    assert source.resolve() == after == source.head_commit()
    assert dict(source.snapshot().files)["desired_state/animals.yaml"].endswith(b"[2]\n")


def test_an_older_commit_can_be_read(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    first = source.resolve()
    commit(repo, {"desired_state/plants.yaml": "model: plants\nversions: [7]\n"})
    assert dict(source.snapshot(first).files)["desired_state/plants.yaml"] == b"model: plants\n"


def test_bytes_are_read_exactly_whatever_their_size(repo: Path) -> None:
    blobs: dict[str, str | bytes] = {
        "desired_state/empty.yaml": b"",
        "desired_state/binary.bin": bytes(range(256)) * 40,
        "desired_state/no_newline.yaml": b"model: x",
    }
    commit(repo, blobs)
    files = dict(open_local(repo / "desired_state").snapshot().files)
    for name, content in blobs.items():
        assert files[name] == content


def test_a_missing_object_is_reported_as_a_damaged_repository(repo: Path) -> None:
    oid = git(repo, "rev-parse", "HEAD:desired_state/plants.yaml")
    (repo / ".git" / "objects" / oid[:2] / oid[2:]).unlink()
    with pytest.raises(GitError, match=f"cannot give blob {oid}.*damaged"):
        open_local(repo / "desired_state").snapshot()


def test_a_single_file_can_be_the_desired_path(repo: Path) -> None:
    source = open_local(repo / "desired_state" / "plants.yaml")
    assert source.path == "desired_state/plants.yaml"
    assert source.snapshot().files == (("desired_state/plants.yaml", b"model: plants\n"),)


def test_the_repository_root_can_be_the_desired_path(repo: Path) -> None:
    source = open_local(repo)
    assert source.path == ""
    assert [name for name, _ in source.snapshot().files] == [
        "desired_state/animals.yaml",
        "desired_state/plants.yaml",
        "docs/README.md",
    ]


def test_symbolic_links_are_not_read(repo: Path) -> None:
    (repo / "desired_state" / "link.yaml").symlink_to("/etc/hostname")
    commit(repo, {})
    names = [name for name, _ in open_local(repo / "desired_state").snapshot().files]
    assert "desired_state/link.yaml" not in names


def test_a_desired_path_that_was_never_committed_is_an_error(repo: Path) -> None:
    write(repo / "later/x.yaml", "model: x\n")
    with pytest.raises(GitError, match="later holds no files in commit"):
        open_local(repo / "later").snapshot()


def test_another_branch_is_read_without_checking_it_out(repo: Path) -> None:
    git(repo, "checkout", "--quiet", "-b", "release/prod")
    prod = commit(repo, {"desired_state/plants.yaml": "model: plants\nversions: [9]\n"})
    git(repo, "checkout", "--quiet", "main")
    source = open_local(repo / "desired_state", branch="release/prod")
    assert source.ref == "refs/heads/release/prod"
    assert source.branch == "release/prod"
    assert source.resolve() == prod != source.head_commit()
    assert dict(source.snapshot().files)["desired_state/plants.yaml"].endswith(b"[9]\n")


def test_the_default_branch_is_the_checked_out_one(repo: Path) -> None:
    git(repo, "checkout", "--quiet", "-b", "staging")
    assert open_local(repo / "desired_state").ref == "refs/heads/staging"


def test_a_detached_head_needs_a_branch_named(repo: Path) -> None:
    git(repo, "checkout", "--quiet", "--detach")
    with pytest.raises(GitError, match="detached"):
        open_local(repo / "desired_state")
    assert open_local(repo / "desired_state", branch="main").resolve()


def test_a_missing_branch_is_reported_when_resolved(repo: Path) -> None:
    source = open_local(repo / "desired_state", branch="nope")
    with pytest.raises(GitError, match="refs/heads/nope does not name a commit"):
        source.resolve()


def test_an_invalid_branch_name_is_refused(repo: Path) -> None:
    with pytest.raises(GitError, match="not a valid branch name"):
        open_local(repo / "desired_state", branch="two..dots")


def test_git_variables_of_the_calling_process_are_ignored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "--quiet")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    source = open_local(repo / "desired_state")
    assert source.work_tree == repo
    assert source.snapshot().files[0][0] == "desired_state/animals.yaml"


def test_a_folder_outside_git_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="not inside a git work tree"):
        open_local(tmp_path / "plain")


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="does not exist"):
        open_local(tmp_path / "nowhere")


def test_ref_files_are_the_loose_ref_packed_refs_and_head(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    loose, packed, head = source.ref_files()
    assert loose == repo / ".git" / "refs" / "heads" / "main"
    assert loose.read_text().strip() == source.resolve()
    assert head.read_text() == "ref: refs/heads/main\n"
    git(repo, "pack-refs", "--all")
    assert not loose.exists()
    assert source.resolve() in packed.read_text()


def test_a_linked_worktree_reads_its_own_branch(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "--quiet", "-b", "canary", str(tmp_path / "canary"))
    canary = commit(tmp_path / "canary", {"desired_state/plants.yaml": "model: plants\n# c\n"})
    source = open_local(tmp_path / "canary" / "desired_state")
    assert source.resolve() == canary
    assert source.ref_files()[0] == repo / ".git" / "refs" / "heads" / "canary"
    assert source.ref_files()[2] == source.git_dir / "HEAD" != repo / ".git" / "HEAD"


# --- following a remote --------------------------------------------------------


@pytest.fixture
def remote(repo: Path, tmp_path: Path) -> Path:
    """A bare repository that ``repo`` pushes to, as a git server would hold it."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    git(repo, "push", "--quiet", str(bare), "main")
    return bare


def test_a_local_clone_follows_the_remote_after_fetch(
    repo: Path, remote: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(remote), str(clone))
    source = open_local(clone / "desired_state", remote_url=str(remote))
    assert source.ref == f"refs/remotes/{REMOTE_NAME}/main"
    with pytest.raises(GitError, match="not fetched yet"):
        source.resolve()
    assert source.fetch() == git(repo, "rev-parse", "HEAD")
    pushed = commit(repo, {"desired_state/animals.yaml": "model: animals\nversions: [3]\n"})
    git(repo, "push", "--quiet", str(remote), "main")
    assert source.resolve() != pushed
    assert source.fetch() == pushed
    assert source.head_commit() != pushed
    assert dict(source.snapshot().files)["desired_state/animals.yaml"].endswith(b"[3]\n")


def test_a_rewritten_remote_history_is_followed(repo: Path, remote: Path, tmp_path: Path) -> None:
    source = open_remote(tmp_path / "cache", str(remote), "desired_state", branch="main")
    source.fetch()
    git(repo, "commit", "--quiet", "--amend", "-m", "rewritten")
    git(repo, "push", "--quiet", "--force", str(remote), "main")
    assert source.fetch() == git(repo, "rev-parse", "HEAD")


def test_a_bare_mirror_needs_no_clone(repo: Path, remote: Path, tmp_path: Path) -> None:
    source = open_remote(tmp_path / "state" / "git", str(remote), "desired_state/")
    assert source.branch == "main"
    assert source.fetch() == git(repo, "rev-parse", "HEAD")
    assert source.snapshot().files[0] == (
        "desired_state/animals.yaml",
        b"model: animals\nversions: [1]\n",
    )
    assert source.head_commit() is None
    assert not source.is_dirty()
    assert source.ref_files()[0].read_text().strip() == source.resolve()


def test_a_bare_mirror_is_reused(remote: Path, tmp_path: Path) -> None:
    first = open_remote(tmp_path / "cache", str(remote), "desired_state")
    first.fetch()
    second = open_remote(tmp_path / "cache", str(remote), "desired_state")
    assert second.resolve() == first.resolve()


def test_an_unreachable_remote_is_an_error(repo: Path, tmp_path: Path) -> None:
    source = open_local(repo / "desired_state", remote_url=str(tmp_path / "missing.git"))
    with pytest.raises(GitError, match=r"git .*fetch.* failed"):
        source.fetch()


def test_a_local_source_has_nothing_to_fetch(repo: Path) -> None:
    with pytest.raises(GitError, match="no remote"):
        open_local(repo / "desired_state").fetch()


def test_a_path_leaving_the_repository_is_refused(remote: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError, match="leaves the repository"):
        open_remote(tmp_path / "cache", str(remote), "../etc")


def test_sources_are_values(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    assert source == open_local(repo / "desired_state")
    with pytest.raises(AttributeError):
        source.ref = "refs/heads/other"  # type: ignore[misc]


def test_a_repository_owned_by_another_user_is_read(repo: Path) -> None:
    """The service's user reads a deploy user's clone: git's ownership check must not stop
    it (tested by owning the clone as nobody while this process is root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the clone to another user")
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 65534, 65534)
    source = open_local(repo / "desired_state")
    assert source.snapshot().files[0][0] == "desired_state/animals.yaml"


# --- a hostile clone -----------------------------------------------------------


def _hostile(repo: Path, markers: Path) -> None:
    """Every program a clone's own .git/config can name for git to run, each leaving a
    marker file when it runs."""
    markers.mkdir()
    hooks = markers.parent / "hooks"
    hooks.mkdir()
    for hook in ("reference-transaction", "post-checkout", "post-merge", "pre-auto-gc"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {markers}/hook-{hook}\n")
        (hooks / hook).chmod(0o755)
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")
    commit(repo, {}, "attributes")
    settings = {
        "core.fsmonitor": f"touch {markers}/fsmonitor; false",
        "core.hooksPath": str(hooks),
        "core.sshCommand": f"touch {markers}/ssh; false",
        "core.pager": f"touch {markers}/pager; cat",
        "core.askPass": f"{markers}/askpass",
        "filter.evil.clean": f"touch {markers}/clean; cat",
        "filter.evil.smudge": f"touch {markers}/smudge; cat",
        "filter.evil.required": "true",
        "diff.evil.textconv": f"touch {markers}/textconv; cat",
        "credential.helper": f"!touch {markers}/credential",
        "protocol.ext.allow": "always",
        "protocol.allow": "always",
        f"url.ext::sh -c touch% {markers}/ext.insteadOf": "hostile:",
        "fetch.recurseSubmodules": "yes",
        "gc.auto": "1",
    }
    for key, value in settings.items():
        git(repo, "config", key, value)
    # racily clean: git must re-read (and so filter) the file to tell whether it changed
    os.utime(repo / "desired_state" / "animals.yaml", (0, 0))
    (repo / ".git" / "index").touch()


@pytest.mark.parametrize("owner", ["self", "another user"])
def test_nothing_a_clones_config_names_is_run(
    repo: Path, remote: Path, tmp_path: Path, owner: str
) -> None:
    """A clone's .git/config (a deploy user's) must not make the reconciler (root) run
    anything: fsmonitor, hooks, filters, ssh, pager, credential helpers, ext:: transports."""
    markers = tmp_path / "markers"
    _hostile(repo, markers)
    if owner == "another user":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the clone to another user")
        for path in [repo, *repo.rglob("*")]:
            os.lchown(path, 65534, 65534)
    source = open_local(repo / "desired_state")
    assert source.snapshot().files[0][0] == "desired_state/animals.yaml"
    source.is_dirty()
    source.head_commit()
    assert open_local(repo / "desired_state", remote_url=str(remote)).fetch()
    for url in ("hostile:x", "ssh://127.0.0.1:1/x.git"):
        with pytest.raises(GitError):
            open_local(repo / "desired_state", remote_url=url).fetch()
    assert sorted(p.name for p in markers.iterdir()) == []


def test_a_repository_planted_above_the_desired_state_by_another_user_is_refused(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a repository to another user")
    shared = tmp_path / "shared"
    git(tmp_path, "init", "--quiet", str(shared))
    os.chown(shared / ".git", 65534, 65534)
    (shared / "desired").mkdir()
    with pytest.raises(GitError, match="another user may have planted"):
        open_local(shared / "desired")


def test_a_file_over_the_limit_is_read_only_far_enough_to_tell(repo: Path) -> None:
    big = b"a: 1\n" + b"#" * 5000
    commit(repo, {"desired_state/big.yaml": big, "desired_state/body.json": big})
    source = open_local(repo / "desired_state")
    files = dict(source.snapshot(max_bytes=100, max_other_bytes=200).files)
    assert files["desired_state/big.yaml"] == big[:101]
    assert files["desired_state/body.json"] == big[:201]
    assert files["desired_state/plants.yaml"] == b"model: plants\n"


def test_a_huge_committed_blob_is_never_held_in_memory(repo: Path) -> None:
    """A 300 MiB blob under desired_state/ made the daemon peak at 650 MiB: sizes come from
    the object header, and only the limit + 1 bytes of a larger blob are read."""
    commit(repo, {"desired_state/huge.yaml": b"#" * (24 * 1024 * 1024)})
    source = open_local(repo / "desired_state")
    tracemalloc.start()
    try:
        files = dict(source.snapshot().files)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(files["desired_state/huge.yaml"]) == DESIRED_MAX + 1
    assert (MAX_FILE_BYTES, MAX_OTHER_BYTES) == (DESIRED_MAX, MAX_REQUEST_BYTES)
    assert peak < 8 * 1024 * 1024
