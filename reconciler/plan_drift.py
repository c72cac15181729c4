"""Drift: live TFS differs from the config it should be serving."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.plan_versions import versions_served
from reconciler.policy import Specific
from reconciler.state import Observed
from reconciler.tfs_config import ServingConfig
from reconciler.version_state import VersionState


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
        for number in sorted(expected):
            entry = status.latest(number)
            if entry is None:
                found.append(Drift(model.name, f"version {number} is not loaded", number))
            elif entry.state != VersionState.AVAILABLE:
                detail = f": {entry.error_message}" if entry.error_message else ""
                found.append(
                    Drift(model.name, f"version {number} is {entry.state}{detail}", number)
                )
        for number in sorted(set(status.available) - expected):
            found.append(
                Drift(model.name, f"version {number} is AVAILABLE but not configured", number)
            )
        resolved = dict(status.labels)
        for label, number in model.labels:
            if label not in resolved:
                found.append(Drift(model.name, f"label {label} is unknown to TFS", number, label))
            elif resolved[label] != number:
                found.append(
                    Drift(
                        model.name,
                        f"label {label} resolves to {resolved[label]}, config says {number}",
                        number,
                        label,
                    )
                )
    return found
