"""The plan: a pure function from desired and observed state to the configs and steps that
make TFS serve what is desired.

A plan's phases are the configs to apply in order. Labels never point at a version that is not
yet AVAILABLE and a labelled version is never unloaded in the same change (TFS accepts the
config, then the label dangles), so a change is split in up to three phases:
  1. load: new versions are added, current labels stay;
  2. relabel: labels move to the (now AVAILABLE) versions;
  3. final: versions no longer wanted are unloaded, pruned models removed.
Phases equal to the one before are dropped, so a pure label move is one phase.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from reconciler.desired import DesiredModel, DesiredState
from reconciler.policy import Specific, describe, served_versions
from reconciler.problems import Location, Problem
from reconciler.state import DiskState, LiveModel, LiveStatus, ModelDir, Observed
from reconciler.tfs_config import ConfigModel, ServingConfig, changed_models
from reconciler.version_state import VersionState


class StepKind(StrEnum):
    ADD_MODEL = "add_model"
    LOAD_VERSION = "load_version"
    SET_POLICY = "set_policy"
    SET_BASE_PATH = "set_base_path"
    ADD_LABEL = "add_label"
    MOVE_LABEL = "move_label"
    REMOVE_LABEL = "remove_label"
    UNLOAD_VERSION = "unload_version"
    REMOVE_MODEL = "remove_model"


_SIGNS = {
    StepKind.ADD_MODEL: "+",
    StepKind.LOAD_VERSION: "+",
    StepKind.ADD_LABEL: "+",
    StepKind.SET_POLICY: "~",
    StepKind.SET_BASE_PATH: "~",
    StepKind.MOVE_LABEL: "~",
    StepKind.REMOVE_LABEL: "-",
    StepKind.UNLOAD_VERSION: "-",
    StepKind.REMOVE_MODEL: "-",
}


@dataclass(frozen=True)
class Step:
    kind: StepKind
    model: str
    version: int | None = None
    label: str | None = None
    old: str | None = None
    new: str | None = None

    @property
    def sign(self) -> str:
        return _SIGNS[self.kind]

    def __str__(self) -> str:
        what = {
            StepKind.ADD_MODEL: f"add model (base_path {self.new})",
            StepKind.LOAD_VERSION: f"load version {self.version}",
            StepKind.SET_POLICY: f"versions {self.old} -> {self.new}",
            StepKind.SET_BASE_PATH: f"base_path {self.old} -> {self.new}",
            StepKind.ADD_LABEL: f"label {self.label} -> {self.new}",
            StepKind.MOVE_LABEL: f"label {self.label} {self.old} -> {self.new}",
            StepKind.REMOVE_LABEL: f"remove label {self.label} (was {self.old})",
            StepKind.UNLOAD_VERSION: f"unload version {self.version}",
            StepKind.REMOVE_MODEL: "remove model",
        }[self.kind]
        return f"{self.sign} {self.model}: {what}"


@dataclass(frozen=True)
class Drift:
    """Live TFS differs from the config it should be serving."""

    model: str
    message: str
    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        return f"! {self.model}: {self.message}"


@dataclass(frozen=True)
class Plan:
    current: ServingConfig | None
    target: ServingConfig
    phases: tuple[ServingConfig, ...]
    steps: tuple[Step, ...]
    problems: tuple[Problem, ...] = ()
    drift: tuple[Drift, ...] = ()
    unmanaged: tuple[str, ...] = ()

    @property
    def changes_config(self) -> bool:
        return self.current != self.target

    @property
    def blocked(self) -> bool:
        return bool(self.problems)

    @property
    def touched(self) -> frozenset[str]:
        """The models this plan changes or repairs: only these need watching while it runs."""
        return changed_models(self.current, self.target) | {d.model for d in self.drift}

    @property
    def in_sync(self) -> bool:
        return not self.changes_config and not self.drift and not self.problems


def plan(desired: DesiredState, observed: Observed) -> Plan:
    current = observed.config or ServingConfig()
    problems = list(_problems(desired, observed, current))
    target = _target(desired, current, observed.disk, observed.applied)
    steps = tuple(_steps(current, target, observed.disk))
    drift = tuple(_drift(current, observed)) if observed.live is not None else ()
    phases: tuple[ServingConfig, ...] = ()
    if not problems and (observed.config != target or drift):
        phases = _phases_to(target, observed)
    managed = {m.name for m in desired.models}  # their missing folders are reported above
    missing = missing_base_paths((target, *phases), observed.disk, skip=managed)
    if missing:
        where = Location(observed.config_path)
        problems.extend(Problem(where, name, message) for name, message in missing)
        phases = ()
    unmanaged = () if desired.prune else tuple(n for n in current.names if desired.model(n) is None)
    return Plan(
        current=observed.config,
        target=target,
        phases=phases,
        steps=steps,
        problems=tuple(sorted(problems)),
        drift=drift,
        unmanaged=unmanaged,
    )


def plan_config(
    observed: Observed, target: ServingConfig, source: str = "the config to roll back to"
) -> Plan:
    """A plan to a given config (a rollback to an earlier one), with the same safe phases.

    Blocked (problems) when a folder the config serves from is gone from disk; `source` names
    the config in those problems (e.g. "history record 3").
    """
    current = observed.config or ServingConfig()
    drift = tuple(_drift(current, observed)) if observed.live is not None else ()
    problems = list(_config_problems(target, observed.disk, source))
    for model in target.models:
        existing = current.model(model.name)
        if existing is not None:
            moved = _move_problem(existing, model.base_path, observed, Location(source), model.name)
            problems.extend([moved] if moved is not None else [])
    phases: tuple[ServingConfig, ...] = ()
    if not problems and (observed.config != target or drift):
        phases = _phases_to(target, observed)
    missing = missing_base_paths(phases, observed.disk, skip={m.name for m in target.models})
    if missing:
        where = Location(observed.config_path)
        problems.extend(Problem(where, name, message) for name, message in missing)
        phases = ()
    return Plan(
        current=observed.config,
        target=target,
        phases=phases,
        steps=tuple(_steps(current, target, observed.disk)),
        problems=tuple(sorted(problems)),
        drift=drift,
    )


STOPS_EVERY_MODEL = (
    "with a base_path missing, TFS stops loading and unloading versions of every model "
    "(its file-system poll gives up at the first missing one)"
)


def missing_base_paths(
    configs: tuple[ServingConfig, ...],
    disk: DiskState,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """(model, message) for each model in `configs` whose base_path is missing on disk, managed
    or not: TFS's `PollFileSystemForConfig` returns at the first servable whose base path is
    missing, so no model gets new versions or drops old ones until it is back. A base_path
    outside the models folder cannot be seen from here and is not judged."""
    found: dict[str, str] = {}
    for config in configs:
        for model in config.models:
            if model.name in skip or model.name in found:
                continue
            folder = disk.model(model.name)
            if folder is not None and not folder.exists and not folder.outside:
                found[model.name] = (
                    f"base_path {model.base_path}: {_missing(folder, model.base_path)}. Restore "
                    "the folder, or remove the model from models.config (or from the desired "
                    "state, with prune)"
                )
    return sorted(found.items())


def _config_problems(target: ServingConfig, disk: DiskState, source: str) -> list[Problem]:
    """What on disk stops TFS from serving `target` (an earlier config: folders may be gone)."""
    problems: list[Problem] = []
    for model in target.models:
        folder = disk.model(model.name)
        field = f"{model.name}"
        if folder is None or not folder.exists:
            problems.append(Problem(Location(source), field, _missing(folder, model.base_path)))
            continue
        for number in _served(model, disk):
            if not _loadable(folder, number):
                problems.append(
                    Problem(
                        Location(source),
                        field,
                        f"version {number} is not on disk (or has no SavedModel): "
                        f"{folder.path}/{number}",
                    )
                )
    return sorted(problems)


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


def _phases_to(target: ServingConfig, observed: Observed) -> tuple[ServingConfig, ...]:
    basis = live_basis(observed.config or ServingConfig(), observed.live, target)
    phases = phases_between(basis, target, observed.disk, no_file=observed.config is None)
    if not phases or phases[-1] != target:
        phases = (*phases, target)
    return phases


def _target(
    desired: DesiredState,
    current: ServingConfig,
    disk: DiskState,
    applied: ServingConfig | None = None,
) -> ServingConfig:
    models: list[ConfigModel] = []
    for model in current.models:
        wanted = desired.model(model.name)
        if wanted is not None:
            models.append(_target_model(wanted, model, disk))
        elif not desired.prune:
            models.append(model)
    for wanted in desired.models:
        if current.model(wanted.name) is None:
            # Gone from the file (a hand edit, a file caught half-written): put back as the
            # last apply wrote it, base_path spelling and unmanaged fields included.
            before = applied.model(wanted.name) if applied is not None else None
            models.append(_target_model(wanted, before, disk))
    return ServingConfig(models=tuple(models))


def _target_model(
    wanted: DesiredModel, current: ConfigModel | None, disk: DiskState
) -> ConfigModel:
    keep_path = current is not None and current.same_base_path(wanted.base_path)
    policy = wanted.policy
    if wanted.labels and not isinstance(policy, Specific):
        # Pinned: under latest/all, TFS itself would serve a new folder and drop the oldest
        # version, labelled or not (or a folder still being copied). Spelled out, versions
        # change only through a plan, in safe phases; the daemon follows new folders.
        policy = Specific(served_versions(policy, _on_disk(disk, wanted.name)))
    return ConfigModel(
        name=wanted.name,
        base_path=current.base_path if current is not None and keep_path else wanted.base_path,
        platform=wanted.platform,
        policy=policy,
        labels=wanted.labels,
        unmanaged=current.unmanaged if current is not None else b"",
    )


def _on_disk(disk: DiskState, name: str) -> tuple[int, ...]:
    folder = disk.model(name)
    return folder.numbers if folder is not None else ()


def _served(model: ConfigModel | None, disk: DiskState) -> tuple[int, ...]:
    if model is None:
        return ()
    return served_versions(model.effective_policy, _on_disk(disk, model.name))


def _problems(desired: DesiredState, observed: Observed, current: ServingConfig) -> list[Problem]:
    problems: list[Problem] = []
    if current.custom:
        problems.append(
            Problem(
                Location(observed.config_path),
                "custom_model_config",
                "this models.config uses custom_model_config; TFS only reloads from one "
                "model_config_list to another, so it cannot be managed",
            )
        )
    for model in desired.models:
        field = f"models.{model.name}"
        folder = observed.disk.model(model.name)
        if folder is None or not folder.exists:
            problems.append(Problem(model.location, field, _missing(folder, model.base_path)))
            continue
        served = served_versions(model.policy, folder.numbers)
        if not served:
            problems.append(
                Problem(
                    model.locate("versions"),
                    f"{field}.versions",
                    f"no version folders in {folder.path} for {describe(model.policy)}",
                )
            )
        for number in served:
            version = folder.version(number)
            if version is None:
                problems.append(
                    Problem(
                        model.locate("versions"),
                        f"{field}.versions",
                        f"version {number} is not on disk: {folder.path}/{number} does not exist",
                    )
                )
            elif not version.loadable and not version.plain_file:
                why = (
                    f"{version.path} {version.refused}"
                    if version.refused
                    else f"{version.path} holds no saved_model.pb or saved_model.pbtxt"
                )
                problems.append(
                    Problem(
                        model.locate("versions"),
                        f"{field}.versions",
                        f"version {number} has no SavedModel: {why}",
                    )
                )
        problems.extend(_version_name_problems(model, folder, field))
        for label, number in model.labels:
            if number not in served:
                problems.append(
                    Problem(
                        model.locate(f"labels.{label}"),
                        f"{field}.labels.{label}",
                        f"version {number} is not served by {describe(model.policy)} "
                        f"(served: {', '.join(map(str, served)) or 'none'})",
                    )
                )
        existing = current.model(model.name)
        if existing is not None:
            moved = _move_problem(
                existing, model.base_path, observed, model.locate("base_path"), field
            )
            problems.extend([moved] if moved is not None else [])
        if existing is not None and existing.platform and existing.platform != model.platform:
            problems.append(
                Problem(
                    model.location,
                    f"{field}.platform",
                    f"TFS cannot change a served model's platform ({existing.platform} -> "
                    f"{model.platform}); remove the model first, then add it back",
                )
            )
    return problems


def _missing(folder: ModelDir | None, base_path: str) -> str:
    """Why a model's folder cannot be served from."""
    if folder is not None and folder.error:
        return f"cannot read model folder {folder.path}: {folder.error}"
    where = folder.path if folder is not None else base_path
    what = (folder.refused if folder is not None else "") or "does not exist"
    return f"model folder {where} {what}; {STOPS_EVERY_MODEL}"


def _version_name_problems(model: DesiredModel, folder: ModelDir, field: str) -> list[Problem]:
    """Entries TFS parses as versions in a way nobody meant: a plain file with a numeric name
    (a version whose load fails) and two folders naming one version (`4` and `0004`)."""
    found = []
    where = model.locate("versions")
    for version in folder.versions:
        if version.plain_file:
            found.append(
                Problem(
                    where,
                    f"{field}.versions",
                    f"{version.path} is a plain file with a version's name: TFS takes it for "
                    f"version {version.version} and fails to load it; remove or rename it",
                )
            )
    for number, names in sorted(folder.duplicates.items()):
        found.append(
            Problem(
                where,
                f"{field}.versions",
                f"{' and '.join(names)} in {folder.path} both name version {number} (TFS "
                "reads a version folder's name as a number); keep one",
            )
        )
    return found


def _move_problem(
    served: ConfigModel, base_path: str, observed: Observed, where: Location, field: str
) -> Problem | None:
    """A base_path change TFS cannot make without breaking a label: it serves a model from
    one folder, so the versions served now that are not in the new folder (the one the disk
    scan read for this model) stop at once, and a label on one of them would answer 404.
    Unlabelled ones may go (the phases drop them first): no desired version is among them,
    or the plan would already say it is not on disk."""
    if served.same_base_path(base_path):
        return None
    live = observed.live.model(served.name) if observed.live is not None else None
    if live is not None and live.found:
        now: tuple[int, ...] = live.available
        labels = dict(live.labels)
    elif isinstance(served.policy, Specific):
        now, labels = served.policy.versions, served.label_map
    else:
        return None  # which versions a latest/all policy serves from the old folder is unknown
    folder = observed.disk.model(served.name)
    if folder is None:
        return None
    left = {n for n in now if not _loadable(folder, n)}
    stranded = sorted(label for label, number in labels.items() if number in left)
    if not stranded:
        return None
    versions = sorted({labels[label] for label in stranded})
    return Problem(
        where,
        f"{field}.base_path",
        f"base_path {served.base_path} -> {base_path}: label(s) {', '.join(stranded)} point at "
        f"version(s) {', '.join(map(str, versions))}, which are not in {folder.path}; TFS "
        "serves a model from one folder, so it would drop them at once and the labels would "
        f"answer 404. Copy them into {folder.path} first, so they serve while the new ones "
        "load; or move those labels in a change of its own first; or serve the new folder "
        "under another model name",
    )


def _loadable(folder: ModelDir, number: int) -> bool:
    version = folder.version(number)
    return version is not None and version.loadable


def _steps(current: ServingConfig, target: ServingConfig, disk: DiskState) -> list[Step]:
    buckets: dict[StepKind, list[Step]] = {kind: [] for kind in StepKind}
    for model in target.models:
        before = current.model(model.name)
        now, then = set(_served(before, disk)), set(_served(model, disk))
        if before is None:
            buckets[StepKind.ADD_MODEL].append(
                Step(StepKind.ADD_MODEL, model.name, new=model.base_path)
            )
        else:
            if before.effective_policy != model.effective_policy and not (
                isinstance(model.policy, Specific) and isinstance(before.policy, Specific)
            ):
                buckets[StepKind.SET_POLICY].append(
                    Step(
                        StepKind.SET_POLICY,
                        model.name,
                        old=describe(before.effective_policy),
                        new=describe(model.effective_policy),
                    )
                )
            if not before.same_base_path(model.base_path):
                buckets[StepKind.SET_BASE_PATH].append(
                    Step(
                        StepKind.SET_BASE_PATH,
                        model.name,
                        old=before.base_path,
                        new=model.base_path,
                    )
                )
        for number in sorted(then - now):
            buckets[StepKind.LOAD_VERSION].append(Step(StepKind.LOAD_VERSION, model.name, number))
        for number in sorted(now - then):
            buckets[StepKind.UNLOAD_VERSION].append(
                Step(StepKind.UNLOAD_VERSION, model.name, number)
            )
        old_labels = before.label_map if before is not None else {}
        for label, number in model.labels:
            if label not in old_labels:
                buckets[StepKind.ADD_LABEL].append(
                    Step(StepKind.ADD_LABEL, model.name, number, label, new=str(number))
                )
            elif old_labels[label] != number:
                buckets[StepKind.MOVE_LABEL].append(
                    Step(
                        StepKind.MOVE_LABEL,
                        model.name,
                        number,
                        label,
                        old=str(old_labels[label]),
                        new=str(number),
                    )
                )
        for label, number in sorted(old_labels.items()):
            if label not in model.label_map:
                buckets[StepKind.REMOVE_LABEL].append(
                    Step(StepKind.REMOVE_LABEL, model.name, number, label, old=str(number))
                )
    for model in current.models:
        if target.model(model.name) is None:
            buckets[StepKind.REMOVE_MODEL].append(Step(StepKind.REMOVE_MODEL, model.name))
    return [step for kind in StepKind for step in buckets[kind]]


def phases_between(
    current: ServingConfig, target: ServingConfig, disk: DiskState, *, no_file: bool = False
) -> tuple[ServingConfig, ...]:
    """The configs that take TFS from `current` to `target` safely, in order (see above)."""
    load: list[ConfigModel] = []
    relabel: list[ConfigModel] = []
    for model in target.models:
        before = current.model(model.name)
        if before is None:
            load.append(replace(model, labels=()))
            relabel.append(model)
            continue
        now, then = _served(before, disk), _served(model, disk)
        if not before.same_base_path(model.base_path):
            # Served from the new folder from the first phase on: what is not in it goes at
            # once (the plan refuses this when a label points at such a version).
            folder = disk.model(model.name)
            now = tuple(n for n in now if folder is not None and _loadable(folder, n))
        union = tuple(sorted(set(now) | set(then)))
        bridging = model if set(union) == set(then) else replace(model, policy=Specific(union))
        kept = {label: v for label, v in before.labels if v in now}
        load.append(replace(bridging, labels=tuple(sorted(kept.items()))))
        relabel.append(bridging)
    for model in current.models:  # pruned models leave in the final phase
        if target.model(model.name) is None:
            load.append(model)
            relabel.append(model)
    phases: list[ServingConfig] = []
    previous: ServingConfig | None = None if no_file else current
    for config in (ServingConfig(tuple(load)), ServingConfig(tuple(relabel)), target):
        if config != previous:
            phases.append(config)
            previous = config
    return tuple(phases)


def labels_needing_a_load(the_plan: Plan, disk: DiskState) -> tuple[str, ...]:
    """The labels the plan sets on a version the current config does not serve: applied in
    one config, each points at a version TFS has not loaded yet."""
    current = the_plan.current or ServingConfig()
    found = []
    for model in the_plan.target.models:
        before = current.model(model.name)
        served = set(_served(before, disk))
        old = before.label_map if before is not None else {}
        for label, number in model.labels:
            if old.get(label) != number and number not in served:
                found.append(f"{model.name}: label {label} -> {number}")
    return tuple(found)


def _drift(current: ServingConfig, observed: Observed) -> list[Drift]:
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
            expected = set(_served(model, observed.disk))
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
