"""The trigger on a ConfigMap volume as the kubelet updates it (reconciler.testing.kubelet)."""

from __future__ import annotations

from pathlib import Path

from reconciler.testing.kubelet import AtomicWriter
from reconciler.watch import FILES_CHANGED, Trigger

GENEROUS = 10.0  # a deadline, not a promise: the bench measures how fast


def test_a_data_swap_wakes_the_loop(tmp_path: Path) -> None:
    writer = AtomicWriter(tmp_path)
    writer.write({"animals.yaml": b"one"})
    with Trigger([tmp_path], debounce=0.05) as trigger:
        assert trigger.wait(0.3) is None
        seen: list[str] = []
        writer = AtomicWriter(tmp_path, on_step=seen.append)
        writer.write({"animals.yaml": b"two"})
        wake = trigger.wait(GENEROUS)
        assert wake is not None and wake.reason == FILES_CHANGED
        # Nothing else wakes it afterwards: one update, one wake-up.
        assert trigger.wait(0.5) is None


def test_only_the_swap_wakes_the_loop_once_the_payload_is_written(tmp_path: Path) -> None:
    """The new timestamped folder is written before the swap; a pass woken by it reads the
    old ..data, and the swap (the rename of ..data_tmp) must wake the loop again."""
    AtomicWriter(tmp_path).write({"animals.yaml": b"one"})
    with Trigger([tmp_path], debounce=0.05) as trigger:
        woken_before_swap: list[object] = []

        def at(step: str) -> None:
            if step == "data_tmp_linked":
                woken_before_swap.append(trigger.wait(GENEROUS))  # the folder's events

        AtomicWriter(tmp_path, on_step=at).write({"animals.yaml": b"two"})
        assert woken_before_swap and woken_before_swap[0] is not None
        wake = trigger.wait(GENEROUS)  # the rename of ..data_tmp over ..data
        assert wake is not None and wake.reason == FILES_CHANGED
