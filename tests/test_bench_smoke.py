"""The benchmark harness still runs (bench/): the scale part at the smallest sizes.

No timing assertions: benchmarks print figures, they do not pass or fail on speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import scale  # noqa: E402
from bench.common import Section, growth_exponent, merged, outages, percentile  # noqa: E402


def test_scale_part_runs_at_the_smallest_sizes() -> None:
    section = Section("Scale")
    found = scale.run(section, quick=True, sizes=(1, 10))
    results = found["results"]
    assert isinstance(results, dict)
    for stage in scale.STAGES:
        assert set(results[stage]) == {1, 10}
        assert all(seconds > 0 for seconds in results[stage].values())
    assert "| parse+validate" in section.markdown()


def test_generated_desired_state_is_valid_and_plans_one_label_move(tmp_path: Path) -> None:
    load = scale.workload(3, tmp_path)
    assert [m.name for m in load.desired.models] == ["model-00000", "model-00001", "model-00002"]
    assert load.plan_and_render() > 0


def test_statistics_helpers() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert abs(growth_exponent([10, 100, 1000], [1.0, 10.0, 100.0]) - 1.0) < 1e-9
    assert abs(growth_exponent([10, 100], [1.0, 100.0]) - 2.0) < 1e-9


def test_an_outage_runs_from_the_last_good_answer_to_the_next() -> None:
    """A restart: answers until 0.2 s, refused 0.5-0.7 s (the client pausing between tries),
    answers again at 1.9 s. Out for 1.7 s, not the 0.2 s between the first and last failure."""
    good = [0.0, 0.1, 0.2, 1.9, 2.0]
    failed = [0.5, 0.6, 0.7]
    assert outages(good, failed) == [(0.2, 1.9)]
    assert outages(good, []) == []
    # Two runs of failures are two outages; with no good answer after, it ends at the last.
    assert outages([1.0, 3.0], [2.0, 2.5, 4.0, 4.5]) == [(1.0, 3.0), (3.0, 4.5)]
    assert outages([], [1.0, 1.5]) == [(1.0, 1.5)]


def test_clients_outages_that_overlap_are_one() -> None:
    assert merged([(0.2, 1.9), (0.3, 2.1), (5.0, 6.0)]) == [(0.2, 2.1), (5.0, 6.0)]
