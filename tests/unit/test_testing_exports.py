"""What reconciler.testing ships for users' own tests: every name it exports resolves, and the
lab helpers fail the way a test wants (a clear AssertionError, or None for "not live")."""

from __future__ import annotations

from pathlib import Path

import pytest

import reconciler.testing as testing
from reconciler.testing import FakeClock, git, label_version, wait_until
from reconciler.testing.lab import GitFailed


def test_every_exported_name_resolves() -> None:
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name


def test_a_failing_git_command_is_an_assertion_naming_it(tmp_path: Path) -> None:
    with pytest.raises(GitFailed, match="git rev-parse HEAD"):
        git(tmp_path, "rev-parse", "HEAD")  # not a repository
    assert issubclass(GitFailed, AssertionError)


def test_label_version_is_none_when_tfs_does_not_answer() -> None:
    assert label_version("http://127.0.0.1:9", "animals", "stable", timeout=1.0) is None


def test_wait_until_fails_after_its_deadline_naming_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match="the moon"):
        wait_until(lambda: False, 0.05, interval=0.01, what="the moon")


def test_the_fake_clock_moves_only_when_slept() -> None:
    clock = FakeClock()
    assert clock() == 0.0
    clock.sleep(2.5)
    assert clock() == 2.5
