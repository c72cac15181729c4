"""SignalThread: handlers run on their own thread, so they may take locks the main thread holds."""

from __future__ import annotations

import os
import signal
import threading

from reconciler.signals import SignalThread


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
