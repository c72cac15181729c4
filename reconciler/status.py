"""The status document: desired versus live per model, the last apply, the last error."""

from __future__ import annotations

from typing import Any

from reconciler.desired import DesiredState
from reconciler.history import Record
from reconciler.plan import Plan
from reconciler.policy import describe, served_versions
from reconciler.render import live_model_json
from reconciler.state import Observed


def status_document(
    desired: DesiredState | None,
    observed: Observed | None,
    the_plan: Plan | None,
    *,
    last: Record | None,
    last_error: str | None,
    source: str,
    config: str | None = None,
) -> dict[str, Any]:
    """A JSON-ready document; `source` says who computed it ("daemon" or "cli"), `config`
    which models.config it is about (its real path)."""
    models = _models(desired, observed, the_plan)
    live_status = observed.live if observed is not None else None
    # What TFS serves was not read (it did not answer): whether it serves the desired state
    # is unknown, never "in sync".
    unknown = the_plan is None or (live_status is not None and not live_status.reachable)
    # The last pass failed (an invalid commit, TFS unreachable): what was last seen in sync
    # is not what is asked for now.
    in_sync = bool(the_plan and the_plan.in_sync and not last_error and not unknown)
    return {
        "source": source,
        "config": config,
        "in_sync": in_sync,
        "state": "in_sync" if in_sync else "unknown" if unknown else "not_in_sync",
        "tfs": {
            "reachable": live_status.reachable if live_status else None,
            "error": live_status.error if live_status else None,
        },
        "models": models,
        "unmanaged": list(the_plan.unmanaged) if the_plan else [],
        "problems": [str(p) for p in the_plan.problems] if the_plan else [],
        "last_apply": _last_apply(last),
        "last_error": last_error,
    }


def _models(
    desired: DesiredState | None, observed: Observed | None, the_plan: Plan | None
) -> dict[str, Any]:
    """Each desired model: what it asks, what TFS serves, and what differs."""
    models: dict[str, Any] = {}
    for model in desired.models if desired is not None else ():
        folder = observed.disk.model(model.name) if observed is not None else None
        entry: dict[str, Any] = {
            "desired": {
                "versions": list(served_versions(model.policy, folder.numbers if folder else ())),
                "policy": describe(model.policy),
                "labels": dict(model.labels),
            }
        }
        live = observed.live.model(model.name) if observed and observed.live else None
        if live is not None:
            entry["live"] = live_model_json(live)
        drift = [d.message for d in the_plan.drift if d.model == model.name] if the_plan else []
        pending = [str(s) for s in the_plan.steps if s.model == model.name] if the_plan else []
        entry["differences"] = pending + drift
        models[model.name] = entry
    return models


def _last_apply(last: Record | None) -> dict[str, Any] | None:
    if last is None:
        return None
    return {
        "id": last.id,
        "time": last.time,
        "outcome": last.outcome,
        "commit": last.commit,
        "message": last.message,
    }


def sync_state(document: dict[str, Any]) -> str:
    """in_sync, not_in_sync or unknown (a daemon of an earlier version sends no "state")."""
    state = document.get("state")
    if state in ("in_sync", "not_in_sync", "unknown"):
        return str(state)
    return "in_sync" if document.get("in_sync") else "not_in_sync"


def status_text(document: dict[str, Any]) -> str:
    lines = []
    state = {"in_sync": "in sync", "unknown": "UNKNOWN (live state not read)"}.get(
        sync_state(document), "NOT in sync"
    )
    lines.append(f"tfs-reconciler status ({document.get('source')}): {state}")
    if document.get("config"):
        lines.append(f"  models.config: {document['config']}")
    tfs = document.get("tfs", {})
    if tfs.get("reachable") is False:
        lines.append(f"  TFS: unreachable ({tfs.get('error')})")
    for name, entry in document.get("models", {}).items():
        desired = entry["desired"]
        lines.append(f"  {name}:")
        labels = ", ".join(f"{k}={v}" for k, v in sorted(desired["labels"].items()))
        lines.append(
            f"    desired: versions {desired['policy']} -> "
            f"{', '.join(map(str, desired['versions'])) or 'none'}; labels {labels or '-'}"
        )
        live = entry.get("live")
        if live is not None:
            versions = ", ".join(f"{v['version']} {v['state']}" for v in live["versions"])
            live_labels = ", ".join(f"{k}={v}" for k, v in sorted(live["labels"].items()))
            lines.append(f"    live:    {versions or 'none'}; labels {live_labels or '-'}")
        for difference in entry.get("differences", []):
            lines.append(f"    differs: {difference}")
    for name in document.get("unmanaged", []):
        lines.append(f"  {name}: in models.config, in no desired-state file (unmanaged)")
    for problem in document.get("problems", []):
        lines.append(f"  problem: {problem}")
    last = document.get("last_apply")
    if last:
        commit = (last.get("commit") or "-")[:12]
        when, outcome = last["time"], last["outcome"]
        lines.append(f"  last apply: #{last['id']} {when} {outcome} commit {commit}")
    if document.get("last_error"):
        lines.append(f"  last error: {document['last_error']}")
    return "\n".join(lines) + "\n"
