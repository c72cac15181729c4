"""The trigger, watching real folders and a real git repository."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.git_source import open_local
from reconciler.testing import lab
from reconciler.watch import FILES_CHANGED, Trigger

DEBOUNCE = 0.1
WAKES_WITHIN = 1.0  # the daemon promises a reconcile within a second of a change
QUIET = 0.6  # long enough for a stray event to have arrived and settled

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


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    (folder / "animals" / "1").mkdir(parents=True)
    (folder / "animals" / "1" / "saved_model.pb").write_bytes(b"v1")
    (folder / "models.config").write_text("model_config_list {}\n")
    (folder / ".tfs-reconciler").mkdir()
    return folder


@pytest.fixture
def trigger(models: Path) -> Iterator[Trigger]:
    with Trigger([models], ignore=[models / ".tfs-reconciler"], debounce=DEBOUNCE) as started:
        yield started


def test_a_new_version_folder_wakes_the_loop(trigger: Trigger, models: Path) -> None:
    (models / "animals" / "2").mkdir()
    wake = trigger.wait(WAKES_WITHIN)
    assert wake is not None
    assert wake.reason == FILES_CHANGED
    assert wake.first_path == str(models / "animals" / "2")


def test_an_edited_file_wakes_the_loop(trigger: Trigger, models: Path) -> None:
    (models / "models.config").write_text("model_config_list { config { name: 'x' } }\n")
    assert trigger.wait(WAKES_WITHIN) is not None


def test_a_deleted_version_wakes_the_loop(trigger: Trigger, models: Path) -> None:
    (models / "animals" / "1" / "saved_model.pb").unlink()
    assert trigger.wait(WAKES_WITHIN) is not None


def test_a_burst_of_changes_is_one_wake_up(trigger: Trigger, models: Path) -> None:
    for version in range(2, 12):
        (models / "animals" / str(version)).mkdir()
        (models / "animals" / str(version) / "saved_model.pb").write_bytes(b"x")
    wake = trigger.wait(WAKES_WITHIN)
    assert wake is not None
    assert wake.events >= 10
    assert trigger.wait(QUIET) is None


def test_nothing_changed_means_waiting_until_the_timeout(trigger: Trigger) -> None:
    started = time.monotonic()
    assert trigger.wait(0.3) is None
    assert time.monotonic() - started >= 0.3


def test_reading_files_does_not_wake_the_loop(trigger: Trigger, models: Path) -> None:
    (models / "models.config").read_text()
    list((models / "animals").iterdir())
    assert trigger.wait(QUIET) is None


def test_writes_to_the_state_folder_and_temp_files_do_not_wake_the_loop(
    trigger: Trigger, models: Path
) -> None:
    (models / ".tfs-reconciler" / "history.jsonl").write_text("{}\n")
    (models / ".models.config.tmp").write_text("draft\n")
    (models / ".models.config.tmp").unlink()
    assert trigger.wait(QUIET) is None
    (models / "animals" / "3").mkdir()
    assert trigger.wait(WAKES_WITHIN) is not None


def test_an_atomic_replace_through_a_temp_file_wakes_the_loop_once(
    trigger: Trigger, models: Path
) -> None:
    temp = models / ".models.config.tmp"
    temp.write_text("model_config_list { }\n")
    os.replace(temp, models / "models.config")
    wake = trigger.wait(WAKES_WITHIN)
    assert wake is not None
    assert wake.first_path == str(models / "models.config")
    assert trigger.wait(QUIET) is None


def test_changes_made_while_reconciling_wake_the_next_wait(trigger: Trigger, models: Path) -> None:
    (models / "animals" / "2").mkdir()
    assert trigger.wait(WAKES_WITHIN) is not None
    (models / "animals" / "3").mkdir()  # while the loop is busy, not waiting
    time.sleep(QUIET)
    wake = trigger.wait(0)
    assert wake is not None
    assert wake.first_path == str(models / "animals" / "3")


def test_a_poke_wakes_the_loop_at_once_with_its_reason(trigger: Trigger) -> None:
    threading.Timer(0.05, trigger.poke, args=("sighup",)).start()
    started = time.monotonic()
    wake = trigger.wait(5)
    assert wake is not None
    assert wake.reason == "sighup"
    assert time.monotonic() - started < 1


def test_a_changing_folder_still_wakes_the_loop_after_max_delay(models: Path) -> None:
    with Trigger([models], debounce=0.3, max_delay=0.5) as trigger:
        stop = threading.Event()

        def keep_writing() -> None:
            for count in range(100):
                if stop.wait(0.05):
                    return
                (models / "animals" / "1" / "saved_model.pb").write_bytes(bytes(count))

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            started = time.monotonic()
            assert trigger.wait(3) is not None
            assert time.monotonic() - started < 1.5
        finally:
            stop.set()
            writer.join()


# --- a git repository ------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "desired_state").mkdir(parents=True)
    git(root, "init", "--quiet", "--initial-branch=main")
    (root / "desired_state" / "animals.yaml").write_text("model: animals\n")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "first")
    return root


def test_a_git_commit_wakes_the_loop_but_an_uncommitted_edit_does_not(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    with Trigger(source.ref_files(), debounce=DEBOUNCE) as trigger:
        (repo / "desired_state" / "animals.yaml").write_text("model: animals\n# edited\n")
        git(repo, "status")
        assert trigger.wait(QUIET) is None
        git(repo, "commit", "--quiet", "--all", "-m", "edit")
        wake = trigger.wait(WAKES_WITHIN)
        assert wake is not None
        assert wake.first_path == str(repo / ".git" / "refs" / "heads" / "main")


def test_packing_refs_wakes_the_loop(repo: Path) -> None:
    source = open_local(repo / "desired_state")
    with Trigger(source.ref_files(), debounce=DEBOUNCE) as trigger:
        git(repo, "pack-refs", "--all")
        assert trigger.wait(WAKES_WITHIN) is not None


# watchdog may warn that it re-adds an inotify watch for a folder created under a
# recursive watch (its own race between the creation event and its scan); harmless.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_a_first_fetch_creating_the_ref_folder_wakes_the_loop(repo: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(remote))
    source = open_local(repo / "desired_state", remote_url=str(remote))
    assert not source.ref_files()[0].parent.exists()
    with Trigger(source.ref_files(), debounce=DEBOUNCE) as trigger:
        source.fetch()
        wake = trigger.wait(WAKES_WITHIN)
        assert wake is not None


def test_git_internals_under_a_watched_folder_do_not_wake_the_loop(repo: Path) -> None:
    with Trigger([repo], debounce=DEBOUNCE) as trigger:
        git(repo, "gc", "--quiet")
        git(repo, "status")
        assert trigger.wait(QUIET) is None
