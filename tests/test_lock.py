"""One writer per models.config, checked across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.lock import AlreadyRunningError, acquire, lock_path

HOLDER = """
import sys
from pathlib import Path
from reconciler.lock import acquire
lock = acquire(Path(sys.argv[1]), "daemon")
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "models.config")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_the_lock_file_beside_the_config_holds_the_holders_pid_and_role(tmp_path: Path) -> None:
    with acquire(tmp_path / "models.config", "apply") as lock:
        assert (
            lock.path
            == tmp_path / ".models.config.lock"
            == lock_path(lock.path.parent / "models.config")
        )
        assert lock.path.read_text() == f"{os.getpid()} apply\n"


def test_a_second_writer_is_refused_naming_the_first(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(AlreadyRunningError) as refused:
        acquire(tmp_path / "models.config", "apply")
    assert refused.value.pid == holder.pid
    assert f"another tfs-reconciler (daemon, pid {holder.pid}) is changing " in str(refused.value)
    assert str(tmp_path / ".models.config.lock") in str(refused.value)


def test_the_lock_is_free_once_the_holder_exits(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    with acquire(tmp_path / "models.config", "apply") as lock:
        assert lock.held


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / ".models.config.lock").read_text() == f"{holder.pid} daemon\n"
    with acquire(tmp_path / "models.config", "daemon") as lock:
        assert lock.path.read_text() == f"{os.getpid()} daemon\n"


def test_released_lock_can_be_taken_again_in_the_same_process(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    first = acquire(config, "apply")
    with pytest.raises(AlreadyRunningError):
        acquire(config, "apply")
    first.release()
    assert not first.held
    with acquire(config, "apply") as second:
        assert second.held


def test_a_symlink_to_the_config_takes_the_same_lock(tmp_path: Path) -> None:
    real = tmp_path / "models" / "models.config"
    real.parent.mkdir()
    real.write_text("")
    link = tmp_path / "link.config"
    link.symlink_to(real)
    with acquire(real, "daemon"), pytest.raises(AlreadyRunningError):
        acquire(link, "apply")
    assert lock_path(link) == real.parent / ".models.config.lock"
