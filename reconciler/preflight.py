"""What a converger works out before it writes a phase, and how it says what serves: pure
functions of configs, the disk and the desired state (no I/O).
"""

from __future__ import annotations

from reconciler.desired import DesiredState
from reconciler.plan import missing_base_paths
from reconciler.policy import served_versions
from reconciler.state import DiskState, LiveStatus
from reconciler.tfs_config import ServingConfig


def names_and_labels(
    touched: frozenset[str], *configs: ServingConfig | None
) -> tuple[tuple[str, ...], dict[str, set[str]]]:
    """The `touched` models and their labels in `configs`: what a wait reads from TFS."""
    labels: dict[str, set[str]] = {name: set() for name in touched}
    for config in configs:
        for model in config.models if config is not None else ():
            if model.name in touched:
                labels[model.name].update(label for label, _ in model.labels)
    return tuple(sorted(touched)), labels


def missing_folders(
    previous: ServingConfig | None, phases: tuple[ServingConfig, ...], disk: DiskState
) -> str | None:
    """Why not to apply when a phase holds a model whose folder is missing: TFS hangs on a
    reload that adds such a model until its deadline (queueing every later reload behind it),
    and one missing base_path, managed or not, stops its file-system poll for every model
    (`PollFileSystemForConfig`), so no version of any model would load or unload."""
    missing = missing_base_paths(phases, disk)
    if missing:
        return "not applying: " + "; ".join(f"{n}: {m}" for n, m in missing)
    before = previous or ServingConfig()
    for phase in phases:
        for model in phase.models:
            known = before.model(model.name)
            if known is not None and known.same_base_path(model.base_path):
                continue
            folder = disk.model(model.name)
            if folder is None or not folder.exists:
                where = folder.path if folder is not None else "outside the models folder"
                return (
                    f"not applying: {model.name} base_path {model.base_path} is not on disk"
                    f" ({where}), and TFS hangs on a new model whose folder is missing"
                )
        before = phase
    return None


def version_changes(
    previous: ServingConfig | None, phases: tuple[ServingConfig, ...], disk: DiskState
) -> list[str]:
    """What in `phases` only a file-system poll makes TFS do: a model added, versions of a
    model added or dropped (a label move or a removed model needs none)."""
    found = []
    before = previous or ServingConfig()
    for phase in phases:
        for model in phase.models:
            old = before.model(model.name)
            folder = disk.model(model.name)
            numbers = folder.numbers if folder is not None else ()
            now = served_versions(model.effective_policy, numbers)
            if old is None:
                found.append(f"{model.name}: a new model")
                continue
            then = served_versions(old.effective_policy, numbers)
            if set(now) != set(then) or not old.same_base_path(model.base_path):
                found.append(
                    f"{model.name}: versions {', '.join(map(str, then)) or 'none'} -> "
                    f"{', '.join(map(str, now)) or 'none'}"
                )
        before = phase
    return list(dict.fromkeys(found))


def describe_live(live: LiveStatus) -> str:
    """What TFS was seen serving (AVAILABLE versions, labels) for the models read."""
    if not live.reachable:
        return f"unknown (TFS does not answer: {live.error})"
    parts = []
    for model in live.models:
        if not model.found:
            parts.append(f"{model.name} not served")
            continue
        labels = ", ".join(f"{label}={version}" for label, version in model.labels)
        text = f"{model.name} versions {', '.join(map(str, model.available)) or 'none'}"
        parts.append(text + (f" ({labels})" if labels else ""))
    return "; ".join(parts) or "nothing that was read"


def describe_serving(config: ServingConfig, disk: DiskState) -> str:
    parts = []
    for model in config.models:
        folder = disk.model(model.name)
        versions = served_versions(model.effective_policy, folder.numbers if folder else ())
        labels = ", ".join(f"{label}={version}" for label, version in model.labels)
        text = f"{model.name} versions {', '.join(map(str, versions)) or 'none'}"
        parts.append(text + (f" ({labels})" if labels else ""))
    return "; ".join(parts) or "no models"


def to_verify(
    phase: ServingConfig,
    applied: ServingConfig,
    previous: ServingConfig | None,
    disk: DiskState,
    desired: DesiredState,
) -> list[tuple[str, int, str, str]]:
    """(model, version, label, request file) for each label `phase` moves to a version
    this apply loads, where the desired state asks for verification."""
    found: list[tuple[str, int, str, str]] = []
    for model in phase.models:
        wanted = desired.model(model.name)
        if wanted is None or wanted.verify_request is None:
            continue
        before = previous.model(model.name) if previous is not None else None
        folder = disk.model(model.name)
        served_before = (
            served_versions(before.effective_policy, folder.numbers if folder else ())
            if before is not None
            else ()
        )
        now = applied.model(model.name)
        old_labels = now.label_map if now is not None else {}
        for label, version in model.labels:
            if old_labels.get(label) != version and version not in served_before:
                found.append((model.name, version, label, wanted.verify_request))
    return found
