"""The desired state: YAML documents, validated against the JSON Schema and TFS's own rules."""

from __future__ import annotations

import contextlib
import gc
import posixpath
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from reconciler import yaml_nodes
from reconciler.by_name import index_by_name
from reconciler.desired_explain import kind_of, schema_problems
from reconciler.policy import AllVersions, Latest, Specific, VersionPolicy, served_versions
from reconciler.problems import InputError, Location, Problem, excerpt
from reconciler.yaml_nodes import Marks, dotted

MAX_FILE_BYTES = 1024 * 1024
DEFAULT_PLATFORM = "tensorflow"


@dataclass(frozen=True)
class DesiredModel:
    """One model as the user wants it served."""

    name: str
    policy: VersionPolicy
    labels: tuple[tuple[str, int], ...]
    base_path: str  # as TFS sees it (container path), normalized
    platform: str
    location: Location  # where the model's key stands
    field_locations: tuple[tuple[str, Location], ...] = ()
    verify_request: str | None = None  # host path of a REST predict body

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.labels)

    def locate(self, field: str) -> Location:
        return dict(self.field_locations).get(field, self.location)


@dataclass(frozen=True)
class DesiredState:
    models: tuple[DesiredModel, ...]
    prune: bool = False
    files: tuple[str, ...] = ()

    def model(self, name: str) -> DesiredModel | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, DesiredModel]:  # plans look up every model
        return index_by_name(self.models)


def parse_documents(
    documents: Sequence[tuple[str, bytes]], serving_root: str = "/models"
) -> DesiredState:
    """Validate and merge desired-state documents given as (display path, raw bytes).

    Raises InputError with every problem found, each naming file, line, column and field.
    """
    if not serving_root.startswith("/"):
        # base_path is a path inside TFS's container; a relative root makes every default
        # base_path relative, and every model folder "missing" on the host.
        raise InputError(
            [
                Problem(
                    Location("--serving-root"),
                    "",
                    f"'{serving_root}' is not an absolute path: give the folder TFS sees"
                    " --models-dir as (e.g. /models)",
                )
            ]
        )
    with _gc_paused():
        return _parse_documents(documents, serving_root)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cycle collector runs after every few hundred new objects and walks all of
    them: over the hundred thousand values of a document at the size limit, judging took
    2.5x longer at each doubling of the size. Judging makes no cycles worth collecting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _parse_documents(documents: Sequence[tuple[str, bytes]], serving_root: str) -> DesiredState:
    problems: list[Problem] = []
    models: dict[str, DesiredModel] = {}
    prune_values: list[tuple[bool, Location]] = []
    for file, raw in documents:
        document = _parse_one(file, raw, serving_root, problems)
        if document is None:
            continue
        file_models, file_prune = document
        if file_prune is not None:
            prune_values.append(file_prune)
        for model in file_models:
            if model.name in models:
                first = models[model.name].location
                problems.append(
                    Problem(
                        model.location,
                        f"models.{model.name}",
                        f"model '{model.name}' is already defined at {first}",
                    )
                )
                continue
            models[model.name] = model
    if len({value for value, _ in prune_values}) > 1:
        for value, where in prune_values:
            problems.append(
                Problem(
                    where, "prune", f"files disagree on prune (this one says {str(value).lower()})"
                )
            )
    if problems:
        raise InputError(problems)
    ordered = tuple(sorted(models.values(), key=lambda m: m.name))
    prune = prune_values[0][0] if prune_values else False
    return DesiredState(models=ordered, prune=prune, files=tuple(f for f, _ in documents))


def _parse_one(
    file: str, raw: bytes, serving_root: str, problems: list[Problem]
) -> tuple[list[DesiredModel], tuple[bool, Location] | None] | None:
    if len(raw) > MAX_FILE_BYTES:
        problems.append(
            # read_documents reads at most one byte past the limit: the true size is unknown
            Problem(Location(file), "", f"file is larger than the limit of {MAX_FILE_BYTES} bytes")
        )
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        problems.append(Problem(Location(file, line, column), "", "not UTF-8 text"))
        return None
    data, marks, found = yaml_nodes.load(text, file, _advice)
    problems.extend(found)
    if data is None and found:
        return None
    if not isinstance(data, dict):  # a list, a scalar, or null (`---`, `~`, `null`)
        problems.append(
            Problem(
                marks.of_value(()),
                "",
                f"expected a mapping with apiVersion and models, got {kind_of(data)}",
            )
        )
        return None
    reported = {p.field for p in found if p.field}  # no second message for a bad YAML value
    against_schema = [p for p in schema_problems(data, marks) if p.field not in reported]
    problems.extend(against_schema)  # `found` is in already
    # Every problem at once: the rules a schema can't state still run on each model whose
    # own part of the document is well-formed. A problem with a key (unknown, misspelt as a
    # boolean) spoils no value: the model's other problems are still found.
    at_key = {dotted(path): where for path, where in marks.keys.items()}
    flawed = [p for p in against_schema + found if at_key.get(p.field) != p.location]
    spoiled = _prefixes(p.field for p in flawed)
    if not isinstance(data.get("models"), dict) or any(p.field == "models" for p in flawed):
        return None
    models = []
    for name, spec in data["models"].items():
        if f"models.{name}" in spoiled:
            continue
        model = _model(name, spec, marks, file, serving_root, problems)
        if model is not None:
            models.append(model)
    prune = None
    if "prune" in data and "prune" not in spoiled:
        prune = (bool(data["prune"]), marks.of_value(("prune",)))
    return models, prune


def _advice(path: yaml_nodes.Path, kind: yaml_nodes.Kind) -> str:
    """What to write instead of a number or boolean YAML 1.1 reads otherwise, by field."""
    match path:
        case ("models", _, "versions", int()) | ("models", _, "labels", _):
            return "write the version in plain decimal"
        case ("models", _, "versions", "latest"):
            return "write the count in plain decimal"
        case ("prune",):
            return "write true or false"
        case ("apiVersion",) | ("models", _, "base_path" | "platform"):
            return "quote it"
        case ("models", _, "verify", "request"):
            return "quote it"
    return yaml_nodes.plain_advice(path, kind)


def _prefixes(fields: Iterable[str]) -> set[str]:
    """Every dotted field the given problems' fields lie at or under."""
    found: set[str] = set()
    for field in fields:
        found.update(field[:i] for i, char in enumerate(field) if char in ".[")
        found.add(field)
    return found


def _model(
    name: str,
    spec: dict[str, Any],
    marks: Marks,
    file: str,
    serving_root: str,
    problems: list[Problem],
) -> DesiredModel | None:
    here = ("models", name)
    before = len(problems)
    policy = _policy(spec["versions"])
    labels: dict[str, int] = spec.get("labels") or {}
    problems.extend(_label_problems(policy, labels, here, marks))
    base_path = _base_path(spec.get("base_path"), name, serving_root)
    problems.extend(_base_path_problems(base_path, spec, here, marks, serving_root))
    verify_request = None
    if "verify" in spec:
        folder = posixpath.dirname(file)
        verify_request = posixpath.join(folder, spec["verify"]["request"])
    if len(problems) > before or base_path is None:
        return None
    return DesiredModel(
        name=name,
        policy=policy,
        labels=tuple(sorted(labels.items())),
        base_path=base_path,
        platform=spec.get("platform", DEFAULT_PLATFORM),
        location=marks.of_key(here),
        field_locations=_field_locations(spec, labels, here, marks),
        verify_request=verify_request,
    )


def _label_problems(
    policy: VersionPolicy, labels: dict[str, int], here: yaml_nodes.Path, marks: Marks
) -> list[Problem]:
    """A label on a version the model's own list does not serve (latest and all: the disk
    decides, so the plan judges them)."""
    if not isinstance(policy, Specific):
        return []
    served = served_versions(policy, ())
    return [
        Problem(
            marks.of_value((*here, "labels", label)),
            dotted((*here, "labels", label)),
            f"version {version} is not served (served: {_join(served)})",
        )
        for label, version in labels.items()
        if version not in served
    ]


def _base_path_problems(
    base_path: str | None,
    spec: dict[str, Any],
    here: yaml_nodes.Path,
    marks: Marks,
    serving_root: str,
) -> list[Problem]:
    """A base_path outside the serving root, or one no file system can hold."""
    where, field = marks.of_value((*here, "base_path")), dotted((*here, "base_path"))
    if base_path is None:
        return [
            Problem(
                where,
                field,
                f"'{excerpt(str(spec.get('base_path')))}' is outside the serving root"
                f" {serving_root} (TFS sees only what is under it; '..' is not allowed)",
            )
        ]
    if _unopenable(base_path) is not None:
        return [
            Problem(
                where,
                field,
                f"'{excerpt(base_path)}' is not a path a file system can hold:"
                f" {_unopenable(base_path)}",
            )
        ]
    return []


def _field_locations(
    spec: dict[str, Any], labels: dict[str, int], here: yaml_nodes.Path, marks: Marks
) -> tuple[tuple[str, Location], ...]:
    """Where each of the model's fields stands, for the plan's problems about them."""
    fields = [("versions", marks.of_value((*here, "versions")))]
    fields += [
        (key, marks.of_value((*here, key))) for key in ("base_path", "platform") if key in spec
    ]
    fields += [(f"labels.{lb}", marks.of_value((*here, "labels", lb))) for lb in labels]
    if "verify" in spec:
        fields.append(("verify.request", marks.of_value((*here, "verify", "request"))))
    return tuple(fields)


def _policy(versions: Any) -> VersionPolicy:
    if versions == "all":
        return AllVersions()
    if isinstance(versions, dict):
        return Latest(int(versions["latest"]))
    return Specific(tuple(sorted(int(v) for v in versions)))


def _base_path(value: str | None, name: str, serving_root: str) -> str | None:
    root = posixpath.normpath(serving_root)
    if value is None:
        return posixpath.join(root, name)
    if ".." in value.split("/"):
        return None
    path = posixpath.normpath(posixpath.join(root, value))
    if path == root or not path.startswith(root.rstrip("/") + "/"):
        return None
    return path


NAME_MAX = 255  # bytes in one folder name (Linux, and TFS's file systems)
PATH_MAX = 4095  # bytes in a whole path


def _unopenable(path: str) -> str | None:
    """Why no file system can hold `path`, or None. Names count in UTF-8 bytes: 64 emoji or
    128 letters with combining marks already pass NAME_MAX."""
    if "\0" in path:
        return "it holds a NUL character"
    if len(path.encode("utf-8", "surrogatepass")) > PATH_MAX:
        return f"it is longer than {PATH_MAX} bytes"
    if any(len(part.encode("utf-8", "surrogatepass")) > NAME_MAX for part in path.split("/")):
        return f"a folder name in it is longer than {NAME_MAX} bytes (in UTF-8)"
    return None


def _join(versions: Iterable[int]) -> str:
    return ", ".join(str(v) for v in versions)
