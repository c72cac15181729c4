"""Which versions a config serves from the disk, what TFS really serves as a config, and the
safe phases between two configs (see reconciler.plan)."""

from __future__ import annotations

from dataclasses import replace

from reconciler.policy import Specific, served_versions
from reconciler.state import DiskState, LiveModel, LiveStatus, ModelDir
from reconciler.tfs_config import ConfigModel, ServingConfig


def on_disk(disk: DiskState, name: str) -> tuple[int, ...]:
    folder = disk.model(name)
    return folder.numbers if folder is not None else ()


def versions_served(model: ConfigModel | None, disk: DiskState) -> tuple[int, ...]:
    if model is None:
        return ()
    return served_versions(model.effective_policy, on_disk(disk, model.name))


def loadable(folder: ModelDir, number: int) -> bool:
    version = folder.version(number)
    return version is not None and version.loadable


def live_basis(
    config: ServingConfig, live: LiveStatus | None, known: ServingConfig | None = None
) -> ServingConfig:
    """What TFS really serves, as a config: the phases start from here, not from the file,
    because TFS may not serve the file (a poll not yet taken, a restart, a refused push, a
    file emptied by hand or caught while being written). A model TFS serves that the file
    lacks is taken as served, with its labels, from its entry in `known` (the target): a
    repair then never pushes it without them."""
    if live is None or not live.reachable:
        return config
    models = []
    for model in config.models:
        status = live.model(model.name)
        if status is None:
            models.append(model)
        elif status.found:
            models.append(_as_served(model, status))
    for model in known.models if known is not None else ():
        status = live.model(model.name)
        if config.model(model.name) is None and status is not None and status.found:
            models.append(_as_served(model, status))
    return ServingConfig(tuple(models))


def _as_served(model: ConfigModel, status: LiveModel) -> ConfigModel:
    available = status.available
    labels = tuple((lb, v) for lb, v in status.labels if v in available)
    return replace(model, policy=Specific(available), labels=labels)


def bridging_configs(
    current: ServingConfig, target: ServingConfig, disk: DiskState
) -> tuple[ServingConfig, ServingConfig, ServingConfig]:
    """The load, relabel and final configs from `current` to `target`, repeats kept: load
    brings the new versions in with the labels where they were, relabel moves the labels with
    old and new versions loaded, final is `target` (a fleet runs them as prepare, flip and
    cleanup, each across all replicas)."""
    load: list[ConfigModel] = []
    relabel: list[ConfigModel] = []
    for model in target.models:
        before = current.model(model.name)
        if before is None:
            load.append(replace(model, labels=()))
            relabel.append(model)
            continue
        now, then = versions_served(before, disk), versions_served(model, disk)
        if not before.same_base_path(model.base_path):
            # Served from the new folder from the first phase on: what is not in it goes at
            # once (the plan refuses this when a label points at such a version).
            folder = disk.model(model.name)
            now = tuple(n for n in now if folder is not None and loadable(folder, n))
        union = tuple(sorted(set(now) | set(then)))
        bridging = model if set(union) == set(then) else replace(model, policy=Specific(union))
        kept = {label: v for label, v in before.labels if v in now}
        load.append(replace(bridging, labels=tuple(sorted(kept.items()))))
        relabel.append(bridging)
    for model in current.models:  # pruned models leave in the final phase
        if target.model(model.name) is None:
            load.append(model)
            relabel.append(model)
    return ServingConfig(tuple(load)), ServingConfig(tuple(relabel)), target


def phases_between(
    current: ServingConfig, target: ServingConfig, disk: DiskState, *, no_file: bool = False
) -> tuple[ServingConfig, ...]:
    """The configs that take TFS from `current` to `target` safely, in order (see above)."""
    phases: list[ServingConfig] = []
    previous: ServingConfig | None = None if no_file else current
    for config in bridging_configs(current, target, disk):
        if config != previous:
            phases.append(config)
            previous = config
    return tuple(phases)
