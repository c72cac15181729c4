"""When a models.config the daemon did not write may be acted on (times are a fake clock's)."""

from __future__ import annotations

from reconciler.settle import Settle


def test_a_content_seen_once_waits_the_quiet_time() -> None:
    settle = Settle(1.0)
    assert settle.wait("empty", now=10.0) == 1.0
    assert settle.wait("empty", now=10.4) > 0
    assert settle.wait("empty", now=11.0) == 0.0


def test_a_content_that_changes_starts_the_wait_again() -> None:
    settle = Settle(1.0)
    settle.wait("empty", now=10.0)
    assert settle.wait("half", now=10.9) == 1.0
    assert settle.wait("half", now=11.5) > 0
    assert settle.wait("half", now=11.9) == 0.0


def test_once_known_the_next_unknown_content_waits_again() -> None:
    settle = Settle(1.0)
    settle.wait("edit", now=10.0)
    assert settle.wait("edit", now=12.0) == 0.0
    settle.known()
    assert settle.wait("edit", now=13.0) == 1.0


def test_a_quiet_time_of_0_acts_on_the_first_read() -> None:
    assert Settle(0.0).wait("anything", now=5.0) == 0.0
