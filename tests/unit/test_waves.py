"""Waves: the canary first, then waves of max_parallel; every replica exactly once, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.fleet_file import Parallel
from reconciler.waves import waves

parallels = st.one_of(
    st.builds(Parallel, st.integers(1, 30)),
    st.builds(Parallel, st.none(), st.integers(1, 100)),
)


def test_one_canary_then_waves_of_two() -> None:
    assert waves("abcdef", 1, Parallel(2)) == (("a",), ("b", "c"), ("d", "e"), ("f",))


def test_a_percentage_counts_the_whole_fleet() -> None:
    assert waves(list(range(8)), 1, Parallel(None, 25)) == ((0,), (1, 2), (3, 4), (5, 6), (7,))


def test_no_canary_starts_with_a_full_wave() -> None:
    assert waves("abc", 0, Parallel(2)) == (("a", "b"), ("c",))


def test_a_canary_larger_than_the_fleet_is_the_whole_fleet() -> None:
    assert waves("ab", 5, Parallel(1)) == (("a", "b"),)


def test_an_empty_fleet_has_no_waves() -> None:
    assert waves([], 1, Parallel(1)) == ()


@given(st.lists(st.integers(), unique=True, max_size=60), st.integers(0, 70), parallels)
def test_every_replica_once_in_order(replicas: list[int], canary: int, parallel: Parallel) -> None:
    found = waves(replicas, canary, parallel)
    assert [r for wave in found for r in wave] == replicas


@given(st.lists(st.integers(), unique=True, min_size=1, max_size=60), st.integers(0, 70), parallels)
def test_wave_sizes_are_bounded(replicas: list[int], canary: int, parallel: Parallel) -> None:
    found = waves(replicas, canary, parallel)
    assert all(found), "no empty wave"
    first = min(canary, len(replicas))
    if first:
        assert len(found[0]) == first
    later = found[1:] if first else found
    assert all(len(wave) <= parallel.of(len(replicas)) for wave in later)
    assert all(len(wave) == parallel.of(len(replicas)) for wave in later[:-1])
