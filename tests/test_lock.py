"""One daemon per state folder, checked across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.lock import LOCK_FILE_NAME, AlreadyRunningError, acquire

HOLDER = """
import sys
from pathlib import Path
from reconciler.lock import acquire
lock = acquire(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the lock until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "state")],
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


def test_the_lock_file_holds_the_holders_pid(tmp_path: Path) -> None:
    with acquire(tmp_path / "state") as lock:
        assert lock.path == tmp_path / "state" / LOCK_FILE_NAME
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_second_daemon_is_refused_with_the_first_ones_pid(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(AlreadyRunningError) as refused:
        acquire(tmp_path / "state")
    assert refused.value.pid == holder.pid
    assert f"pid {holder.pid}" in str(refused.value)
    assert str(tmp_path / "state" / LOCK_FILE_NAME) in str(refused.value)


def test_the_lock_is_free_once_the_holder_exits(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    with acquire(tmp_path / "state") as lock:
        assert lock.held


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert (tmp_path / "state" / LOCK_FILE_NAME).read_text() == f"{holder.pid}\n"
    with acquire(tmp_path / "state") as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_released_lock_can_be_taken_again_in_the_same_process(tmp_path: Path) -> None:
    first = acquire(tmp_path)
    with pytest.raises(AlreadyRunningError):
        acquire(tmp_path)
    first.release()
    assert not first.held
    with acquire(tmp_path) as second:
        assert second.held
