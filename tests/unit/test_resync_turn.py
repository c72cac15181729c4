"""A resync reads a bounded number of models' live state, taking turns; what it read before
fills in the status document, unless TFS no longer answers."""

from __future__ import annotations

from reconciler.daemon_pass import merge_live, resync_turn
from reconciler.observe import LiveModel, LiveStatus, LiveVersion


def test_few_models_are_all_read_every_resync() -> None:
    assert resync_turn({"a", "b"}, 5, 100) == ({"a", "b"}, 0)


def test_many_models_are_read_in_turns_that_cover_them_all() -> None:
    names = {f"m{i:02}" for i in range(25)}
    cursor, seen = 0, []
    for _ in range(3):
        turn, cursor = resync_turn(names, cursor, 10)
        assert len(turn) == 10
        seen.append(turn)
    assert set().union(*seen) == names
    assert seen[0] == {f"m{i:02}" for i in range(10)}
    assert seen[2] == {f"m{i:02}" for i in (20, 21, 22, 23, 24, 0, 1, 2, 3, 4)}


def test_a_shrinking_model_list_keeps_the_cursor_in_range() -> None:
    turn, cursor = resync_turn({"a", "b", "c", "d"}, 99, 3)
    assert len(turn) == 3 and 0 <= cursor < 4


def test_status_shows_no_stale_live_state_once_tfs_stops_answering() -> None:
    seen = LiveStatus(True, (LiveModel("animals", True, (LiveVersion(2, "AVAILABLE"),)),))
    gone = LiveStatus(False, error="connection refused")
    assert merge_live(seen, gone) == gone
    merged = merge_live(seen, LiveStatus(True, (LiveModel("birds", True),)))
    assert merged is not None and [m.name for m in merged.models] == ["animals", "birds"]
