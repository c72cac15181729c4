"""models.config on disk: replaced atomically, only when it changes, mode kept; last-known-good."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.config_file import (
    LAST_KNOWN_GOOD,
    default_state_dir,
    last_known_good,
    read_text,
    remove_stale_temps,
    save_last_known_good,
    write_atomic,
)


def test_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    assert write_atomic(path, "a\n") is True
    assert path.read_text() == "a\n"


def test_new_file_is_world_readable_for_tfs(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    write_atomic(path, "a\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "models.config"
    write_atomic(path, "a\n")
    assert path.read_text() == "a\n"


def test_same_content_is_not_written_again(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text("same\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()
    assert write_atomic(path, "same\n") is False
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


def test_changed_content_replaces_the_file_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text("old\n")
    inode = path.stat().st_ino
    assert write_atomic(path, "new\n") is True
    assert path.read_text() == "new\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old one


def test_mode_of_the_replaced_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text("old\n")
    path.chmod(0o600)
    write_atomic(path, "new\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    write_atomic(path, "a\n")
    write_atomic(path, "b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "models.config"
    path.write_text("old\n")

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.config"]


def test_text_is_written_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    write_atomic(path, "name: 'caf\u00e9'\n")
    assert path.read_bytes() == "name: 'caf\u00e9'\n".encode()


def test_last_known_good_round_trips(tmp_path: Path) -> None:
    state = tmp_path / ".tfs-reconciler"
    assert last_known_good(state) is None
    save_last_known_good(state, "good\n")
    assert (state / LAST_KNOWN_GOOD).read_text() == "good\n"
    assert last_known_good(state) == "good\n"


def test_state_folder_defaults_beside_the_config(tmp_path: Path) -> None:
    assert default_state_dir(tmp_path / "models.config") == tmp_path / ".tfs-reconciler"


def test_state_folder_of_a_symlinked_config_is_beside_its_target(tmp_path: Path) -> None:
    real = tmp_path / "models" / "models.config"
    real.parent.mkdir()
    real.write_text("")
    (tmp_path / "link.config").symlink_to(real)
    assert default_state_dir(tmp_path / "link.config") == real.parent / ".tfs-reconciler"


def test_reading_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_text(tmp_path / "nope") is None


def test_a_symlinked_config_stays_a_link_and_its_target_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "real" / "models.config"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "models.config"
    link.symlink_to(target)
    assert write_atomic(link, "new\n")
    assert link.is_symlink()
    assert target.read_text() == "new\n"
    assert not list(tmp_path.glob(".*.tmp")) and not list(target.parent.glob(".*.tmp"))


def test_a_folder_that_cannot_take_the_file_is_named_in_the_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(OSError, match=f"cannot write {blocker}/models.config: "):
        write_atomic(blocker / "models.config", "x")


def test_stale_temporaries_of_a_killed_write_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """Issue 10: a kill -9 between the temporary file and the rename left
    `.models.config.*.tmp` behind every time, and no later run removed it."""
    config = tmp_path / "models.config"
    config.write_text("model_config_list {}\n")
    stale = tmp_path / ".models.config.a1B2c3D4.tmp"
    stale.write_text("half")
    outside = tmp_path / "elsewhere"
    outside.write_text("not ours")
    planted = tmp_path / ".models.config.zzzzzzzz.tmp"
    planted.symlink_to(outside)
    others = [tmp_path / ".models.config.lock", tmp_path / ".other.config.a1B2c3D4.tmp"]
    for other in others:
        other.write_text("keep")
    assert remove_stale_temps(config) == (stale.name,)
    assert not stale.exists()
    assert planted.is_symlink() and outside.read_text() == "not ours"
    assert all(other.exists() for other in others)
    assert config.read_text() == "model_config_list {}\n"


def test_only_regular_temporaries_of_this_user_or_root_are_removed(tmp_path: Path) -> None:
    """A folder, a FIFO or another user's file named like a temporary stays: the folder is
    often writable by whoever publishes models, and the reconciler typically runs as root."""
    config = tmp_path / "models.config"
    folder = tmp_path / ".models.config.dddddddd.tmp"
    folder.mkdir()
    (folder / "inside").write_text("keep")
    fifo = tmp_path / ".models.config.ffffffff.tmp"
    os.mkfifo(fifo)
    theirs = tmp_path / ".models.config.tttttttt.tmp"
    theirs.write_text("theirs")
    ours = tmp_path / ".models.config.oooooooo.tmp"
    ours.write_text("ours")
    if os.geteuid() == 0:
        os.chown(theirs, 4242, 4242)
        os.chown(ours, 0, 0)
    else:  # another user's file cannot be made here; one of ours must be taken as ours
        theirs.unlink()
    assert remove_stale_temps(config) == (ours.name,)
    assert (folder / "inside").read_text() == "keep"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not ours.exists()
    assert os.geteuid() != 0 or theirs.read_text() == "theirs"


def test_stale_temporaries_are_removed_through_the_folder_opened_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each name is looked at and removed relative to one descriptor of the folder: a folder
    swapped for a link to another one once it was listed cannot lead the removal there."""
    models, kept, elsewhere = tmp_path / "models", tmp_path / "kept", tmp_path / "elsewhere"
    for folder in (models, elsewhere):
        folder.mkdir()
        (folder / ".models.config.a1B2c3D4.tmp").write_text(f"in {folder.name}")
    real_listdir, real_scandir = os.listdir, os.scandir

    def swap() -> None:
        models.rename(kept)
        models.symlink_to(elsewhere)

    def listdir(folder: Any) -> list[str]:
        names = real_listdir(folder)
        swap()
        return names

    @contextlib.contextmanager
    def scandir(folder: Any) -> Iterator[list[os.DirEntry[str]]]:
        with real_scandir(folder) as listing:
            entries = list(listing)
        swap()
        yield entries

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    assert remove_stale_temps(models / "models.config") == (".models.config.a1B2c3D4.tmp",)
    monkeypatch.undo()
    assert not (kept / ".models.config.a1B2c3D4.tmp").exists()
    assert (elsewhere / ".models.config.a1B2c3D4.tmp").read_text() == "in elsewhere"


def test_an_apply_removes_stale_temporaries_first(tmp_path: Path) -> None:
    from reconciler.config_store import FileConfigStore
    from reconciler.converge import Converger, Target
    from reconciler.desired import DesiredState
    from reconciler.observe import DiskState
    from reconciler.plan import Plan
    from reconciler.reload import NoReload
    from reconciler.tfs_config import ServingConfig

    config = tmp_path / "models.config"
    stale = tmp_path / ".models.config.a1B2c3D4.tmp"
    stale.write_text("half")
    state = tmp_path / "state"
    state.mkdir()
    stale_lkg = state / ".last-known-good.config.x_Y1z2W3.tmp"
    stale_lkg.write_text("half")
    target = Target(None, FileConfigStore(config, state), NoReload())  # type: ignore[arg-type]
    converger = Converger(target)
    empty = ServingConfig()
    converger.apply(Plan(empty, empty, (), ()), DiskState(), DesiredState(()))
    assert not stale.exists() and not stale_lkg.exists()
