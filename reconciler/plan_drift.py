"""Drift: live TFS differs from the config it should be serving."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.health import ModelHealth, Standing, assess_model
from reconciler.plan_versions import versions_served
from reconciler.policy import Specific
from reconciler.state import Observed
from reconciler.tfs_config import ServingConfig


@dataclass(frozen=True)
class Drift:
    """Live TFS differs from the config it should be serving."""

    model: str
    message: str
    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        return f"! {self.model}: {self.message}"


def find_drift(current: ServingConfig, observed: Observed) -> list[Drift]:
    live = observed.live
    if live is None or not live.reachable:
        return []
    found: list[Drift] = []
    for model in current.models:
        status = live.model(model.name)
        if status is None:
            continue
        if not status.found:
            found.append(Drift(model.name, "TFS does not serve this model"))
            continue
        folder = observed.disk.model(model.name)
        if (folder is None or not folder.exists) and not isinstance(model.policy, Specific):
            # Its folder is gone: which versions latest/all would serve is unknowable, and
            # TFS keeps serving what it loaded. Only its labels can be checked.
            expected = set(status.available)
        else:
            expected = set(versions_served(model, observed.disk))
        found += drift_of(assess_model(model.name, status, sorted(expected), model.labels))
    return found


def drift_of(health: ModelHealth) -> list[Drift]:
    """How a served model differs from its config, one Drift per version or label."""
    name = health.model
    found: list[Drift] = []
    for version in health.wanted:
        number = version.version
        if version.standing is Standing.NOT_LISTED:
            found.append(Drift(name, f"version {number} is not loaded", number))
        elif version.standing is not Standing.SERVING:
            detail = f": {version.error_message}" if version.error_message else ""
            found.append(Drift(name, f"version {number} is {version.state}{detail}", number))
    for number in health.extra:
        found.append(Drift(name, f"version {number} is AVAILABLE but not configured", number))
    for label in health.labels:
        if label.resolved is None:
            found.append(
                Drift(name, f"label {label.label} is unknown to TFS", label.wanted, label.label)
            )
        elif not label.ok:
            found.append(
                Drift(
                    name,
                    f"label {label.label} resolves to {label.resolved}, config says {label.wanted}",
                    label.wanted,
                    label.label,
                )
            )
    return found
