"""The reconciler's own files (lock, state folder, history, last-known-good) are never written
through a symbolic link or hard link planted in their place: the models folder is often
writable by whoever publishes models, and the reconciler typically runs as root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from reconciler.config_file import last_known_good, save_last_known_good, write_atomic
from reconciler.history import HISTORY_FILE, Record, _keep_newest, append_record, read_history
from reconciler.lock import acquire, lock_path
from reconciler.no_follow import UnsafePathError
from reconciler.observe import read_config
from reconciler.problems import InputError

SECRET = b"root:x:0:0:root:/root:/bin/bash\n"


def record() -> Record:
    return Record(id=0, time="2024-01-01T00:00:00Z", outcome="applied", message="m", reload="none")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the reconciler was never asked to write."""
    path = tmp_path / "elsewhere" / "passwd"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "models.config").write_text("model_config_list {}\n")
    return folder


def test_a_symlink_planted_as_the_lock_is_refused_not_truncated(models: Path, victim: Path) -> None:
    lock_path(models / "models.config").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        acquire(models / "models.config", "apply")
    assert victim.read_bytes() == SECRET


def test_a_hard_link_planted_as_the_lock_is_refused_not_truncated(
    models: Path, victim: Path
) -> None:
    os.link(victim, lock_path(models / "models.config"))
    with pytest.raises(UnsafePathError, match="hard link"):
        acquire(models / "models.config", "apply")
    assert victim.read_bytes() == SECRET


def test_the_lock_beside_a_config_the_user_linked_is_still_taken(
    tmp_path: Path, models: Path
) -> None:
    link = tmp_path / "linked.config"
    link.symlink_to(models / "models.config")
    with acquire(link, "apply") as held:
        assert held.path == models / ".models.config.lock"


def test_a_state_folder_that_is_a_symlink_is_refused(models: Path, victim: Path) -> None:
    state = models / ".tfs-reconciler"
    state.symlink_to(victim.parent)
    with pytest.raises(UnsafePathError, match="state folder is a symbolic link"):
        append_record(state, record())
    with pytest.raises(OSError, match="symbolic link"):
        save_last_known_good(state, "model_config_list {}\n")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["passwd"]


def test_the_state_folder_is_created_private(models: Path) -> None:
    state = models / ".tfs-reconciler"
    append_record(state, record())
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_state_folder_others_can_write_is_refused(models: Path) -> None:
    state = models / ".tfs-reconciler"
    state.mkdir()
    state.chmod(0o777)
    with pytest.raises(UnsafePathError, match="writable by others"):
        append_record(state, record())


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_state_folder_of_another_user_is_refused(models: Path) -> None:
    state = models / ".tfs-reconciler"
    state.mkdir(mode=0o700)
    os.chown(state, 4242, 4242)
    with pytest.raises(UnsafePathError, match="belongs to uid 4242"):
        append_record(state, record())


def test_a_history_file_that_is_a_symlink_is_neither_written_nor_read(
    models: Path, victim: Path
) -> None:
    state = models / ".tfs-reconciler"
    state.mkdir()
    (state / HISTORY_FILE).symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        append_record(state, record())
    with pytest.raises(UnsafePathError, match="symbolic link"):
        read_history(state)
    assert victim.read_bytes() == SECRET


def test_a_history_file_that_is_a_fifo_is_refused_without_blocking(models: Path) -> None:
    state = models / ".tfs-reconciler"
    state.mkdir()
    os.mkfifo(state / HISTORY_FILE)
    with pytest.raises(UnsafePathError, match="plain file"):
        read_history(state)
    with pytest.raises(UnsafePathError, match="plain file"):
        append_record(state, record())


def test_trimming_the_history_does_not_write_through_a_planted_temp_link(
    models: Path, victim: Path
) -> None:
    state = models / ".tfs-reconciler"
    for _ in range(3):
        append_record(state, record())
    (state / f".{HISTORY_FILE}.tmp").symlink_to(victim)
    _keep_newest(state / HISTORY_FILE, 10)
    assert victim.read_bytes() == SECRET
    assert [r.id for r in read_history(state)] == [3]


def test_a_last_known_good_that_is_a_symlink_is_neither_written_nor_read(
    models: Path, victim: Path
) -> None:
    state = models / ".tfs-reconciler"
    state.mkdir()
    (state / "last-known-good.config").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        save_last_known_good(state, "model_config_list {}\n")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        last_known_good(state)
    assert victim.read_bytes() == SECRET


def test_models_config_linked_on_purpose_is_written_through_its_link(
    tmp_path: Path, models: Path
) -> None:
    link = tmp_path / "linked.config"
    link.symlink_to(models / "models.config")
    assert write_atomic(link, "model_config_list { config { name: 'a' } }\n")
    assert link.is_symlink()
    assert "name: 'a'" in (models / "models.config").read_text()


# --- models.config: a link the user made is followed, one planted by another user is not ------


@pytest.mark.skipif(os.geteuid() != 0, reason="making a link as another user needs root")
def test_a_models_config_link_planted_by_another_user_is_not_followed(
    models: Path, victim: Path
) -> None:
    config = models / "models.config"
    config.unlink()
    config.symlink_to(victim)
    os.lchown(config, 4242, 4242)
    with pytest.raises(OSError, match="made by uid 4242"):
        write_atomic(config, "model_config_list {}\n")
    with pytest.raises(UnsafePathError, match="made by uid 4242"):
        acquire(config, "apply")
    assert victim.read_bytes() == SECRET
    assert not (victim.parent / ".passwd.lock").exists()


@pytest.mark.timeout(20)
def test_a_fifo_or_device_as_models_config_is_refused_without_waiting(models: Path) -> None:
    config = models / "models.config"
    config.unlink()
    os.mkfifo(config)
    with pytest.raises(InputError, match="not a regular file"):
        read_config(config)
    with pytest.raises(OSError, match="not a regular file"):
        write_atomic(config, "model_config_list {}\n")
    config.unlink()
    config.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="not a regular file"):
        read_config(config)


def test_an_invalid_models_config_is_quoted_only_in_part(models: Path) -> None:
    config = models / "models.config"
    # protobuf's error for a bad string quotes the whole line it stands on
    config.write_text('model_config_list { config { base_path: "' + "h" * 80 + '\\360" } }\n')
    with pytest.raises(InputError) as caught:
        read_config(config)
    assert "h" * 40 not in str(caught.value)


def test_a_planted_state_folder_feeds_no_records_to_history_or_rollback(
    tmp_path: Path, models: Path
) -> None:
    elsewhere = tmp_path / "planted"
    append_record(elsewhere, record())
    save_last_known_good(elsewhere, "model_config_list {}\n")
    (models / ".tfs-reconciler").symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        read_history(models / ".tfs-reconciler")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        last_known_good(models / ".tfs-reconciler")
    open_to_all = tmp_path / "open"
    append_record(open_to_all, record())
    open_to_all.chmod(0o777)
    with pytest.raises(UnsafePathError, match="writable by others"):
        read_history(open_to_all)
    assert read_history(elsewhere)[0].message == "m"
