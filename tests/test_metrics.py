"""The daemon's metrics, read back through their own registry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from reconciler.metrics import OUTCOMES, Metrics
from reconciler.outcome import Result


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_outcome_is_exposed_at_zero_before_any_reconcile() -> None:
    metrics = Metrics.create()
    for outcome in OUTCOMES:
        assert sample(metrics, "tfs_reconciler_reconciles_total", outcome=outcome) == 0


def test_a_successful_reconcile_counts_and_moves_last_success() -> None:
    metrics = Metrics.create()
    metrics.record_reconcile(Result.APPLIED, finished_at=1_700_000_000.0, convergence_seconds=4.2)
    assert sample(metrics, "tfs_reconciler_reconciles_total", outcome="applied") == 1
    assert sample(metrics, "tfs_reconciler_last_success_timestamp_seconds") == 1_700_000_000.0
    assert sample(metrics, "tfs_reconciler_convergence_seconds_count") == 1
    assert sample(metrics, "tfs_reconciler_convergence_seconds_sum") == pytest.approx(4.2)
    assert sample(metrics, "tfs_reconciler_convergence_seconds_bucket", le="5.0") == 1
    assert sample(metrics, "tfs_reconciler_convergence_seconds_bucket", le="2.5") == 0


@pytest.mark.parametrize("outcome", [Result.ERROR, Result.INVALID, Result.ROLLED_BACK])
def test_a_failed_reconcile_does_not_move_last_success(outcome: Result) -> None:
    metrics = Metrics.create()
    metrics.record_reconcile(Result.NOOP, finished_at=100.0)
    metrics.record_reconcile(outcome, finished_at=200.0)
    assert sample(metrics, "tfs_reconciler_reconciles_total", outcome=outcome) == 1
    assert sample(metrics, "tfs_reconciler_last_success_timestamp_seconds") == 100.0


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        Metrics.create().record_reconcile("fine", finished_at=0.0)  # type: ignore[arg-type]


def test_drift_is_counted_per_model() -> None:
    metrics = Metrics.create()
    metrics.record_drift(["animals", "plants"])
    metrics.record_drift(["animals"])
    assert sample(metrics, "tfs_reconciler_drift_detected_total", model="animals") == 2
    assert sample(metrics, "tfs_reconciler_drift_detected_total", model="plants") == 1


def test_version_gauges_forget_models_no_longer_named() -> None:
    metrics = Metrics.create()
    metrics.set_versions({"animals": 2, "plants": 1}, {"animals": 1, "plants": 1})
    metrics.set_versions({"animals": 3}, {"animals": 3})
    assert sample(metrics, "tfs_reconciler_desired_versions", model="animals") == 3
    assert sample(metrics, "tfs_reconciler_live_versions", model="animals") == 3
    assert sample(metrics, "tfs_reconciler_desired_versions", model="plants") is None
    assert sample(metrics, "tfs_reconciler_live_versions", model="plants") is None


def test_only_the_last_applied_commit_is_exposed() -> None:
    metrics = Metrics.create()
    metrics.set_applied_commit("aaaa")
    metrics.set_applied_commit("bbbb")
    assert sample(metrics, "tfs_reconciler_applied_commit_info", commit="bbbb") == 1
    assert sample(metrics, "tfs_reconciler_applied_commit_info", commit="aaaa") is None


def test_two_metric_sets_share_nothing_and_stay_out_of_the_global_registry() -> None:
    first, second = Metrics.create(), Metrics.create()
    first.record_reconcile(Result.ERROR, finished_at=0.0)
    assert sample(second, "tfs_reconciler_reconciles_total", outcome="error") == 0
    names = {metric.name for metric in REGISTRY.collect()}
    assert not any(name.startswith("tfs_reconciler") for name in names)


def test_render_is_parseable_text_exposition() -> None:
    metrics = Metrics.create()
    metrics.record_drift(["animals"])
    names = {family.name for family in text_string_to_metric_families(metrics.render().decode())}
    assert {
        "tfs_reconciler_reconciles",
        "tfs_reconciler_drift_detected",
        "tfs_reconciler_convergence_seconds",
        "tfs_reconciler_last_success_timestamp_seconds",
        "tfs_reconciler_desired_versions",
        "tfs_reconciler_live_versions",
        "tfs_reconciler_applied_commit_info",
    } <= names
