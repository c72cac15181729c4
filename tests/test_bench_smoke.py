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
from bench.common import Section, growth_exponent, percentile  # noqa: E402


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
