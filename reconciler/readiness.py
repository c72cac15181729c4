"""Model-aware readiness (``/readyz`` with ``--sidecar``): can this pod's TFS answer every
request the desired state names? (The desired state of the last pass that ended in sync: a
change not yet live, refused or rolled back is not judged.)

Ready when the reconciler has converged once since it started, TFS answers, every desired
model has an AVAILABLE version, and every desired label resolves (through TFS's label
metadata, the lookup a request by label makes) to an AVAILABLE version. Which version a label
resolves to does not matter: during a promotion the old version serves under the label until
the label moves, and the pod stays ready. Whether the pod serves exactly the desired state is
``/status``, not readiness: a ConfigMap change reaches every pod at about the same time, and
a probe that failed while a new version loads would empty the Service.

``decide`` is the pure rule; ``LiveReadiness`` reads TFS for it (at most once per
``max_age`` seconds, however often the kubelet and others probe).

In a fleet, ``replica_readiness`` gives each replica its own ``LiveReadiness``
(``/readyz/<replica>``, a load balancer's or Docker's health check of that TFS), asked with
``converged=True``: a replica that serves every desired model and label takes traffic even
before the reconciler has converged it, so a reconciler that is down or restarting never takes
the fleet out of the balancer. Through a normal promotion each replica stays ready (the old
version serves under the label until the flip), so readiness never empties the balancer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler.desired import DesiredState
from reconciler.observe import LiveStatus, StatusSource, read_live
from reconciler.replica import Replica
from reconciler.tfs_rest import TfsRest

__all__ = ["LiveReadiness", "Readiness", "decide", "judged", "replica_readiness"]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        return {"ready": self.ready, "reasons": list(self.reasons)}


def judged(accepted: DesiredState | None, current: DesiredState | None) -> DesiredState | None:
    """What readiness judges TFS against: the desired state of the last pass that ended in sync
    (`accepted`), less what the `current` desired state takes away. A change adds nothing
    until it is live (one refused or rolled back reaches every replica at once, and must not
    make them all unready while each serves as before); a model or label it removes stops
    counting as soon as it is read (the change's cleanup removes it before its pass ends)."""
    if accepted is None or current is None:
        return accepted
    models = []
    for model in accepted.models:
        now = current.model(model.name)
        if now is None:
            continue
        kept = now.label_map
        models.append(replace(model, labels=tuple(lv for lv in model.labels if lv[0] in kept)))
    return replace(accepted, models=tuple(models))


def decide(desired: DesiredState | None, live: LiveStatus | None, converged: bool) -> Readiness:
    """Whether the pod may take traffic, with every reason it may not."""
    if not converged:
        return Readiness(False, ("not converged yet since the reconciler started",))
    if desired is None:
        return Readiness(False, ("no desired state read yet",))
    if live is None:
        return Readiness(False, ("TFS not asked yet",))
    if not live.reachable:
        return Readiness(False, (f"TFS does not answer: {live.error}".rstrip(": "),))
    reasons: list[str] = []
    for model in desired.models:
        found = live.model(model.name)
        if found is None or not found.found:
            reasons.append(f"model {model.name}: not served by TFS")
            continue
        available = set(found.available)
        if not available:
            states = ", ".join(f"{v.version} {v.state}" for v in found.versions) or "none"
            reasons.append(f"model {model.name}: no AVAILABLE version (versions: {states})")
        resolved = dict(found.labels)
        for label, _wanted in model.labels:
            version = resolved.get(label)
            if version is None:
                reasons.append(f"model {model.name}: label {label} resolves to no version")
            elif version not in available:
                reasons.append(
                    f"model {model.name}: label {label} resolves to version {version},"
                    " which is not AVAILABLE"
                )
    return Readiness(not reasons, tuple(reasons))


class LiveReadiness:
    """`decide` on what TFS says now; the answer is kept `max_age` seconds."""

    def __init__(
        self,
        desired: Callable[[], DesiredState | None],
        source: Callable[[], StatusSource],
        *,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._desired = desired
        self._source = source
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: tuple[float, bool, DesiredState | None, Readiness] | None = None

    def __call__(self, converged: bool) -> Readiness:
        desired = self._desired()
        with self._lock:  # concurrent probes share one read of TFS
            now = self._clock()
            kept = self._kept
            if (
                kept is not None
                and now - kept[0] < self._max_age
                and kept[1] == converged
                and (kept[2] is desired or kept[2] == desired)
            ):
                return kept[3]
            live = None
            if converged and desired is not None:
                live = read_live(self._source(), [m.name for m in desired.models], _labels(desired))
            answer = decide(desired, live, converged)
            self._kept = (self._clock(), converged, desired, answer)
            return answer


def replica_readiness(
    replicas: Iterable[Replica],
    desired: Callable[[], DesiredState | None],
    *,
    timeout: float = 2.0,
    max_age: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    source: Callable[[Replica, float], StatusSource] = lambda r, t: TfsRest(r.rest, t),
) -> dict[str, LiveReadiness]:
    """One model-aware readiness check per replica, by name: ``decide`` on what that TFS says
    (asked through ``source``, each call bounded by ``timeout`` seconds), kept ``max_age``
    seconds. Call each with ``True`` (see the module doc). Builds values only: TFS is asked
    when a check is called."""

    def source_of(replica: Replica) -> Callable[[], StatusSource]:
        return lambda: source(replica, timeout)

    return {
        replica.name: LiveReadiness(desired, source_of(replica), max_age=max_age, clock=clock)
        for replica in replicas
    }


def _labels(desired: DesiredState) -> Mapping[str, list[str]]:
    return {m.name: [label for label, _ in m.labels] for m in desired.models}
