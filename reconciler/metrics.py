"""The daemon's Prometheus metrics, in a registry of their own.

A ``Metrics`` value owns a fresh ``CollectorRegistry`` (never the process-wide
default one), so two daemons in one test process, or a test and a daemon,
never share counters. ``render()`` gives the text exposition that
``/metrics`` serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from reconciler.outcome import Result

__all__ = ["CONTENT_TYPE", "OUTCOMES", "Metrics"]

# A pass stopped by SIGTERM between phases is not counted: the next start finishes it.
# Nor the history's own words (a write-ahead record; an apply the plan blocked or whose rollback
# failed is counted by the daemon as invalid or error).
_NOT_COUNTED = (Result.INTERRUPTED, Result.STARTED, Result.BLOCKED, Result.FAILED)
OUTCOMES = tuple(r for r in Result if r not in _NOT_COUNTED)
_CONVERGED = (Result.APPLIED, Result.WRITTEN, Result.NOOP)
CONTENT_TYPE = CONTENT_TYPE_LATEST

NAMESPACE = "tfs_reconciler"
CONVERGENCE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True)
class Metrics:
    """The metric families; create with ``Metrics.create()``."""

    registry: CollectorRegistry
    reconciles: Counter
    drift_detected: Counter
    convergence_seconds: Histogram
    last_success: Gauge
    desired_versions: Gauge
    live_versions: Gauge
    applied_commit: Gauge
    fetch_failures: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            reconciles=_reconciles(registry),
            drift_detected=Counter(
                "drift_detected",
                "Times a model's served state was found different from the desired state "
                "(counted when the drift appears or changes, not at each pass that sees it).",
                ["model"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            convergence_seconds=Histogram(
                "convergence_seconds",
                "Seconds from the start of a reconcile that changed something until TFS "
                "served the desired state.",
                namespace=NAMESPACE,
                buckets=CONVERGENCE_BUCKETS,
                registry=registry,
            ),
            last_success=Gauge(
                "last_success_timestamp_seconds",
                "Unix time of the last reconcile that ended converged (applied, written or noop).",
                namespace=NAMESPACE,
                registry=registry,
            ),
            desired_versions=Gauge(
                "desired_versions",
                "Number of versions the desired state asks TFS to serve, per model.",
                ["model"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            live_versions=Gauge(
                "live_versions",
                "Number of versions TFS reports AVAILABLE, per model.",
                ["model"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            applied_commit=Gauge(
                "applied_commit_info",
                "Always 1; the label commit is the git commit of the last applied desired state.",
                ["commit"],
                namespace=NAMESPACE,
                registry=registry,
            ),
            fetch_failures=Counter(
                "git_fetch_failures",
                "Fetches of --git-remote that failed (the last fetched commit serves on).",
                namespace=NAMESPACE,
                registry=registry,
            ),
        )

    def record_reconcile(
        self,
        outcome: Result,
        *,
        finished_at: float,
        convergence_seconds: float | None = None,
    ) -> None:
        """Count one reconcile pass ending at unix time ``finished_at``.

        ``convergence_seconds`` is given for passes that changed something and
        converged; applied, written and noop passes move the last-success timestamp.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        self.reconciles.labels(outcome=outcome).inc()
        if convergence_seconds is not None:
            self.convergence_seconds.observe(convergence_seconds)
        if outcome in _CONVERGED:
            self.last_success.set(finished_at)

    def record_drift(self, models: Iterable[str]) -> None:
        """Count drift for each model whose served state differed from the desired one."""
        for model in models:
            self.drift_detected.labels(model=model).inc()

    def set_versions(self, desired: Mapping[str, int], live: Mapping[str, int]) -> None:
        """Replace the per-model version counts; models not named disappear."""
        _replace(self.desired_versions, desired)
        _replace(self.live_versions, live)

    def set_applied_commit(self, commit: str) -> None:
        """Name the git commit of the last applied desired state (one series at a time)."""
        self.applied_commit.clear()
        self.applied_commit.labels(commit=commit).set(1)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric in this registry."""
        return generate_latest(self.registry)


def _reconciles(registry: CollectorRegistry) -> Counter:
    """The pass counter, every outcome's series present from the start (at 0)."""
    reconciles = Counter(
        "reconciles",
        "Reconcile passes, by outcome, as the log's reconciled and reconcile_failed "
        "events say it: applied (changed and converged), written (--reload none: "
        "models.config written, TFS not asked), noop (nothing to change), invalid "
        "(desired state rejected or plan blocked), error, rolled_back.",
        ["outcome"],
        namespace=NAMESPACE,
        registry=registry,
    )
    for outcome in OUTCOMES:
        reconciles.labels(outcome=outcome)
    return reconciles


def _replace(gauge: Gauge, values: Mapping[str, int]) -> None:
    gauge.clear()
    for model, count in values.items():
        gauge.labels(model=model).set(count)
