"""The fleet baseline part of the benchmark still runs (bench/fleet_baseline.py): its file edit
and one small round, with figures printed, never asserted."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import fleet_baseline  # noqa: E402

LAB_CONFIG = ROOT / "examples" / "models" / "models.config"


def test_set_stable_moves_only_the_stable_label(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    shutil.copy(LAB_CONFIG, config)
    fleet_baseline.set_stable(config, 3)
    changed = [
        (before, after)
        for before, after in zip(
            LAB_CONFIG.read_text().splitlines(), config.read_text().splitlines(), strict=True
        )
        if before != after
    ]
    assert changed == [("      value: 2", "      value: 3")]
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]


@pytest.mark.integration
def test_a_round_measures_one_window_per_promotion(tmp_path: Path) -> None:
    result = fleet_baseline.measure_round(2, 1, tmp_path)
    assert len(result.windows) == 1
    assert result.windows[0] >= 0
    assert (sum(result.failed.values()), result.unavailable_spans) == (0, 0)
