"""`status --fleet`: per replica, the single-TFS status document (desired versus live per model,
its versions' states and where its labels resolve, drift), with the config digest and commit
it serves and the rollout it last took part in; and where the replicas disagree on a label."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reconciler.config_file import read_text
from reconciler.desired import DesiredState
from reconciler.fleet_replicas import digest, read_serving, replica_settings
from reconciler.history import read_history, unfinished
from reconciler.plan import plan
from reconciler.reconcile import observe_for
from reconciler.replica import Replica
from reconciler.settings import Settings
from reconciler.status import status_document, sync_state
from reconciler.tfs_rest import TfsRest

STATUS_READERS = 8  # replicas read at once


def replica_status(base: Settings, replica: Replica, desired: DesiredState) -> dict[str, Any]:
    """One replica's status document, named."""
    settings = replica_settings(base, replica)
    try:
        records = unfinished(read_history(settings.state_path))
        unreadable = None
    except OSError as error:
        records, unreadable = [], f"cannot read the history: {error}"
    last = records[-1] if records else None
    observed = observe_for(settings, desired, TfsRest(replica.rest, base.request_timeout))
    document = status_document(
        desired,
        observed,
        plan(desired, observed),
        last=last,
        last_error=unreadable,
        source="cli",
        config=str(settings.config_path),
    )
    serving = read_serving(base.state_path, replica.name) or {}
    text = read_text(settings.config_path)
    return {
        "name": replica.name,
        "rest": replica.rest,
        "grpc": replica.grpc,
        "config_digest": digest(text),
        "commit": serving.get("commit") or (last.commit if last is not None else None),
        "rollout": {"generation": serving["generation"], "phase": serving["phase"]}
        if "generation" in serving
        else None,
        **document,
    }


def fleet_status(
    base: Settings,
    replicas: Sequence[Replica],
    desired: DesiredState,
    read: Callable[[Settings, Replica, DesiredState], dict[str, Any]] = replica_status,
) -> dict[str, Any]:
    """The fleet's status document: one object per replica, in rollout order."""
    if not replicas:
        return fleet_document([])
    with ThreadPoolExecutor(max_workers=min(STATUS_READERS, len(replicas))) as pool:
        found = list(pool.map(lambda r: read(base, r, desired), replicas))
    return fleet_document(found)


def fleet_document(replicas: list[dict[str, Any]]) -> dict[str, Any]:
    """Replicas' documents together: the fleet is in sync when each is; unknown when one is."""
    states = [sync_state(r) for r in replicas]
    state = (
        "unknown"
        if "unknown" in states or not replicas
        else "in_sync"
        if all(s == "in_sync" for s in states)
        else "not_in_sync"
    )
    return {
        "state": state,
        "in_sync": state == "in_sync",
        "replicas": replicas,
        "label_disagreements": label_disagreements(replicas),
    }


def label_disagreements(replicas: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """model -> label -> {replica: version} for each label the replicas resolve differently."""
    seen: dict[str, dict[str, dict[str, int]]] = {}
    for replica in replicas:
        for model, entry in replica.get("models", {}).items():
            for label, version in (entry.get("live") or {}).get("labels", {}).items():
                seen.setdefault(model, {}).setdefault(label, {})[replica["name"]] = version
    return {
        model: {label: by for label, by in labels.items() if len(set(by.values())) > 1}
        for model, labels in seen.items()
        if any(len(set(by.values())) > 1 for by in labels.values())
    }


_STATE_WORDS = {"in_sync": "in sync", "unknown": "UNKNOWN (not read)", "not_in_sync": "NOT in sync"}


def fleet_text(document: dict[str, Any]) -> str:
    """The fleet's status for people: a block per replica, then the label disagreements."""
    replicas = document.get("replicas", [])
    lines = [
        f"fleet: {_STATE_WORDS.get(document.get('state', ''), '?')}"
        f" ({sum(sync_state(r) == 'in_sync' for r in replicas)} of {len(replicas)} in sync)"
    ]
    for replica in replicas:
        rollout = replica.get("rollout")
        took = f"  rollout {rollout['generation']} ({rollout['phase']})" if rollout else ""
        lines.append(
            f"{replica['name']}: {_STATE_WORDS.get(sync_state(replica), '?')}"
            f"  config {replica.get('config_digest') or '-'}"
            f"  commit {(replica.get('commit') or '-')[:12]}{took}"
        )
        tfs = replica.get("tfs", {})
        if tfs.get("reachable") is False:
            lines.append(f"  TFS at {replica['rest']}: unreachable ({tfs.get('error')})")
        for name, entry in replica.get("models", {}).items():
            live = entry.get("live")
            if live is None:
                lines.append(f"  {name}: live state not read")
                continue
            versions = ", ".join(f"{v['version']} {v['state']}" for v in live["versions"])
            labels = ", ".join(f"{k}->{v}" for k, v in sorted(live["labels"].items()))
            lines.append(f"  {name}: {versions or 'no versions'}; labels {labels or '-'}")
            for difference in entry.get("differences", []):
                lines.append(f"    differs: {difference}")
        for problem in replica.get("problems", []):
            lines.append(f"  problem: {problem}")
    for model, labels in document.get("label_disagreements", {}).items():
        for label, by in labels.items():
            where = ", ".join(f"{name}->{version}" for name, version in sorted(by.items()))
            lines.append(f"label {model}:{label} differs across replicas: {where}")
    return "\n".join(lines) + "\n"
