"""What stops a plan: the problems of a desired state (or of an earlier config to roll back
to) against the disk and what TFS serves, each written for the person who fixes it."""

from __future__ import annotations

from reconciler.desired import DesiredModel, DesiredState
from reconciler.plan_versions import loadable, versions_served
from reconciler.policy import Specific, describe, served_versions
from reconciler.problems import Location, Problem
from reconciler.state import DiskState, ModelDir, Observed
from reconciler.tfs_config import ConfigModel, ServingConfig

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


def config_problems(target: ServingConfig, disk: DiskState, source: str) -> list[Problem]:
    """What on disk stops TFS from serving `target` (an earlier config: folders may be gone)."""
    problems: list[Problem] = []
    for model in target.models:
        folder = disk.model(model.name)
        field = f"{model.name}"
        if folder is None or not folder.exists:
            problems.append(Problem(Location(source), field, _missing(folder, model.base_path)))
            continue
        for number in versions_served(model, disk):
            if not loadable(folder, number):
                problems.append(
                    Problem(
                        Location(source),
                        field,
                        f"version {number} is not on disk (or has no SavedModel): "
                        f"{folder.path}/{number}",
                    )
                )
    return sorted(problems)


def desired_problems(
    desired: DesiredState, observed: Observed, current: ServingConfig
) -> list[Problem]:
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
        problems.extend(_model_problems(model, observed, current))
    return problems


def _model_problems(
    model: DesiredModel, observed: Observed, current: ServingConfig
) -> list[Problem]:
    """What stops TFS from serving one desired model: its folder, its versions on disk, its
    labels, and what the config it serves now rules out."""
    field = f"models.{model.name}"
    folder = observed.disk.model(model.name)
    if folder is None or not folder.exists:
        return [Problem(model.location, field, _missing(folder, model.base_path))]
    served = served_versions(model.policy, folder.numbers)
    problems = _served_problems(model, folder, served, field)
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
        moved = move_problem(existing, model.base_path, observed, model.locate("base_path"), field)
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


def _served_problems(
    model: DesiredModel, folder: ModelDir, served: tuple[int, ...], field: str
) -> list[Problem]:
    """The versions the policy serves from `folder`: none at all, or one missing or holding
    no SavedModel."""
    where = model.locate("versions")
    problems: list[Problem] = []
    if not served:
        problems.append(
            Problem(
                where,
                f"{field}.versions",
                f"no version folders in {folder.path} for {describe(model.policy)}",
            )
        )
    for number in served:
        version = folder.version(number)
        if version is None:
            problems.append(
                Problem(
                    where,
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
                Problem(where, f"{field}.versions", f"version {number} has no SavedModel: {why}")
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


def move_problem(
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
    left = {n for n in now if not loadable(folder, n)}
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
