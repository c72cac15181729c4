"""The fleet rollout part of the benchmark still runs (bench/fleet_rollout.py): one small
promotion on two replicas, figures printed, never asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import fleet_rollout  # noqa: E402


def test_a_promotion_moves_both_labels_one_version_on() -> None:
    assert fleet_rollout.desired([3, 2], 2, 3) == (
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n"
        "    versions: [2, 3]\n    labels: {stable: 2, canary: 3}\n"
    )


@pytest.mark.integration
def test_one_promotion_on_two_replicas_measures_one_window() -> None:
    row = fleet_rollout.measure(2, 1)
    assert len(row.windows) == len(row.done) == len(row.live) == 1
    assert row.windows[0] >= 0 and row.live[0] > 0
    assert (row.failed, row.unavailable_spans) == (0, 0)
    assert row.requests > 0
