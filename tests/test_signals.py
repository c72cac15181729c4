"""SignalThread: handlers run on their own thread, so they may take locks the main thread holds.
GracefulInterrupt: the first signal asks, the second acts."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from reconciler.signals import GracefulInterrupt, SignalThread


def test_a_handler_may_take_a_lock_the_main_thread_holds_when_the_signal_lands() -> None:
    lock = threading.Lock()
    seen: list[signal.Signals] = []
    done = threading.Event()

    def on_usr2(signum: signal.Signals) -> None:
        with lock:  # a handler run on the main thread would wait here forever
            seen.append(signum)
        if len(seen) == 3:
            done.set()

    with SignalThread({signal.SIGUSR2: on_usr2}):
        with lock:
            for _ in range(3):
                os.kill(os.getpid(), signal.SIGUSR2)
            assert not done.wait(0.2)
        assert done.wait(10)
    assert seen == [signal.SIGUSR2] * 3


def test_stop_restores_the_previous_handler_and_wakeup_fd() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    with SignalThread({signal.SIGUSR2: lambda _signum: None}):
        assert signal.getsignal(signal.SIGUSR2) is not before
    assert signal.getsignal(signal.SIGUSR2) is before
    assert signal.set_wakeup_fd(-1) == -1


def test_graceful_interrupt_asks_first_and_the_second_signal_acts(
    capfd: pytest.CaptureFixture[str],
) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with GracefulInterrupt("stopping at the next phase") as interrupt:
        assert not interrupt.requested
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: interrupt.requested)
        assert "SIGTERM: stopping at the next phase (SIGTERM again stops at once)" in (
            capfd.readouterr().err
        )
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            wait_for(lambda: False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_graceful_interrupt_leaves_an_ignored_signal_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with GracefulInterrupt("x") as interrupt:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            assert not interrupt.requested
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run bytecode (signal handlers run between two) until `condition` or the timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
