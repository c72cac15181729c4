"""The desired state: YAML documents, validated against the JSON Schema and TFS's own rules."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from reconciler import kubelet_volume, yaml_nodes
from reconciler.by_name import index_by_name
from reconciler.policy import AllVersions, Latest, Specific, VersionPolicy, served_versions
from reconciler.problems import InputError, Location, Problem, excerpt
from reconciler.regular_file import read_bounded
from reconciler.yaml_nodes import Marks, dotted

API_VERSION = "tfs-reconciler/v1"
MAX_FILE_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a verify request: a REST predict body
MAX_EXPLAINED_MODELS = 500  # per file; past them, a flawed model gets one line
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


@cache
def schema() -> dict[str, Any]:
    text = resources.files("reconciler").joinpath("desired-state.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _strict_integer(_checker: object, instance: object) -> bool:
    # JSON Schema counts 2.0 as an integer; a version written 2.0 is a typo, not a version.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _ecma_pattern(
    validator: Draft202012Validator, pattern: str, instance: object, _schema: object
) -> Iterator[jsonschema.ValidationError]:
    # JSON Schema patterns are ECMA-262, where `$` matches only at the very end; Python's `$`
    # also matches before a final newline, which would let "stable\n" pass as a label name.
    if not isinstance(instance, str):
        return
    python = (
        pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    )
    if not re.search(python, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _unique_items(
    validator: Draft202012Validator, unique: bool, instance: object, _schema: object
) -> Iterator[jsonschema.ValidationError]:
    # jsonschema compares unsortable items (mappings) pairwise: quadratic, so a list of 30,000
    # mappings under `versions` took minutes. One canonical text per item makes it linear.
    if not unique or not isinstance(instance, list):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(item, sort_keys=True, default=repr)
        if key in seen:
            yield jsonschema.ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)


@cache
def _validator() -> Draft202012Validator:
    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer)
    cls = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        validators={"pattern": _ecma_pattern, "uniqueItems": _unique_items},
        type_checker=checker,
    )
    validator: Draft202012Validator = cls(_inline_refs(schema()))
    return validator


def _inline_refs(node: Any, defs: dict[str, Any] | None = None) -> Any:
    """`node` with each `{"$ref": "#/$defs/NAME"}` replaced by that definition (the schema has
    no recursive ones): resolving a reference costs jsonschema more than checking the value,
    and there is one per version and per model (validation 30 % faster)."""
    if defs is None:
        defs = node.get("$defs", {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: v if k == "$defs" else _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    return node


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
                f"expected a mapping with apiVersion and models, got {_kind(data)}",
            )
        )
        return None
    reported = {p.field for p in found if p.field}  # no second message for a bad YAML value
    schema_problems = [p for p in _schema_problems(data, marks) if p.field not in reported]
    problems.extend(schema_problems)  # `found` is in already
    # Every problem at once: the rules a schema can't state still run on each model whose
    # own part of the document is well-formed. A problem with a key (unknown, misspelt as a
    # boolean) spoils no value: the model's other problems are still found.
    at_key = {dotted(path): where for path, where in marks.keys.items()}
    flawed = [p for p in schema_problems + found if at_key.get(p.field) != p.location]
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
    if isinstance(policy, Specific):
        served = served_versions(policy, ())
        for label, version in labels.items():
            if version not in served:
                problems.append(
                    Problem(
                        marks.of_value((*here, "labels", label)),
                        dotted((*here, "labels", label)),
                        f"version {version} is not served (served: {_join(served)})",
                    )
                )
    base_path = _base_path(spec.get("base_path"), name, serving_root)
    if base_path is None:
        problems.append(
            Problem(
                marks.of_value((*here, "base_path")),
                dotted((*here, "base_path")),
                f"'{excerpt(str(spec.get('base_path')))}' is outside the serving root"
                f" {serving_root} (TFS sees only what is under it; '..' is not allowed)",
            )
        )
    elif _unopenable(base_path) is not None:
        problems.append(
            Problem(
                marks.of_value((*here, "base_path")),
                dotted((*here, "base_path")),
                f"'{excerpt(base_path)}' is not a path a file system can hold:"
                f" {_unopenable(base_path)}",
            )
        )
    verify_request = None
    if "verify" in spec:
        folder = posixpath.dirname(file)
        verify_request = posixpath.join(folder, spec["verify"]["request"])
    if len(problems) > before or base_path is None:
        return None
    fields = [("versions", marks.of_value((*here, "versions")))]
    fields += [
        (key, marks.of_value((*here, key))) for key in ("base_path", "platform") if key in spec
    ]
    fields += [(f"labels.{lb}", marks.of_value((*here, "labels", lb))) for lb in labels]
    if "verify" in spec:
        fields.append(("verify.request", marks.of_value((*here, "verify", "request"))))
    return DesiredModel(
        name=name,
        policy=policy,
        labels=tuple(sorted(labels.items())),
        base_path=base_path,
        platform=spec.get("platform", DEFAULT_PLATFORM),
        location=marks.of_key(here),
        field_locations=tuple(fields),
        verify_request=verify_request,
    )


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


_TYPE_NOUNS = {
    "integer": "an integer",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
}


def _kind(value: Any) -> str:
    """What a value is, without quoting it: a whole document that is not a mapping may be
    a secrets file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, list):
        return "a list"
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"'{excerpt(value)}' (a string)"
    if isinstance(value, float):
        return f"{value} (a float)"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _schema_problems(data: dict[str, Any], marks: Marks) -> Iterable[Problem]:
    errors = sorted(_schema_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        yield from _explain(error, marks)


def _schema_errors(data: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """The schema's errors for `data`. jsonschema takes about 0.3 ms a model, 10 s for a
    document at the size limit: a model the quick check finds valid is not given to it (the
    two agree: tests/unit/test_desired.py checks it on generated models)."""
    models = data.get("models")
    if not isinstance(models, dict):
        yield from _validator().iter_errors(data)
        return
    yield from _validator().iter_errors({**data, "models": {}})
    flawed = (name for name, spec in models.items() if not _valid_model(name, spec))
    for name in itertools.islice(flawed, MAX_EXPLAINED_MODELS):
        alone = {"apiVersion": API_VERSION, "models": {name: models[name]}}
        yield from _validator().iter_errors(alone)
    for name in flawed:  # the rest: named, one line each
        yield jsonschema.ValidationError(
            f"has problems, not listed: more than {MAX_EXPLAINED_MODELS} models in this file"
            " have some; fix those first",
            path=["models", name],
            validator="unexplained",
        )


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,127}\Z")
_PLATFORM = re.compile(r"[A-Za-z0-9_]+\Z")
_MODEL_KEYS = frozenset({"versions", "labels", "base_path", "platform", "verify"})
_INT64_MAX = 2**63 - 1
_UINT32_MAX = 2**32 - 1


def _is_version(value: object, maximum: int = _INT64_MAX) -> bool:
    return type(value) is int and 1 <= value <= maximum


def _valid_model(name: object, spec: object) -> bool:
    """The schema's rules for one model (name and spec), written out: True only when
    jsonschema would find nothing wrong with it."""
    if not isinstance(name, str) or not _MODEL_NAME.match(name) or type(spec) is not dict:
        return False
    if "versions" not in spec or not spec.keys() <= _MODEL_KEYS:
        return False
    versions = spec["versions"]
    if type(versions) is list:
        if not versions or not all(_is_version(v) for v in versions):
            return False
        if len(set(versions)) != len(versions):
            return False
    elif type(versions) is dict:
        if versions.keys() != {"latest"} or not _is_version(versions["latest"], _UINT32_MAX):
            return False
    elif versions != "all":
        return False
    labels = spec.get("labels", {})
    if type(labels) is not dict or not all(
        isinstance(k, str) and _LABEL_NAME.match(k) and _is_version(v) for k, v in labels.items()
    ):
        return False
    if "base_path" in spec and not (type(spec["base_path"]) is str and spec["base_path"]):
        return False
    if "platform" in spec and not (
        type(spec["platform"]) is str and _PLATFORM.match(spec["platform"])
    ):
        return False
    if "verify" in spec:
        verify = spec["verify"]
        if type(verify) is not dict or verify.keys() != {"request"}:
            return False
        if not (type(verify["request"]) is str and verify["request"]):
            return False
    return True


def _explain(error: jsonschema.ValidationError, marks: Marks) -> Iterable[Problem]:
    path = tuple(error.absolute_path)
    field = dotted(path)
    where = marks.of_value(path)
    kind = error.validator
    rule: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties":
        allowed = sorted(rule.get("properties", {}))
        extra = set(error.instance) if isinstance(error.instance, dict) else set()
        for key in sorted(extra - set(allowed)):
            yield Problem(
                marks.of_key((*path, key)),
                dotted((*path, key)),
                f"unknown key '{excerpt(key)}' (allowed: {', '.join(allowed)})",
            )
        return
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield Problem(where, field, f"missing required key '{missing}'")
        return
    if "propertyNames" in error.schema_path:
        noun = "label" if path and path[-1] == "labels" else "model"
        yield Problem(
            marks.of_key((*path, str(error.instance))),
            dotted((*path, str(error.instance))),
            f"'{excerpt(str(error.instance))}' is not a valid {noun} name."
            f" {rule.get('description', '')}",
        )
        return
    if kind == "oneOf" and path and path[-1] == "versions":
        branch = (
            0
            if isinstance(error.instance, list)
            else 1
            if isinstance(error.instance, dict)
            else None
        )
        subs = [e for e in error.context or [] if e.relative_schema_path[0] == branch]
        if branch is not None and subs:
            for sub in subs:
                yield from _explain(sub, marks)
            return
        yield Problem(
            where,
            field,
            f"{_describe(error.instance)} is not a version policy:"
            " use a list of versions, {latest: N} or all",
        )
        return
    if kind == "type":
        expected = error.validator_value
        noun = _TYPE_NOUNS.get(expected, expected) if isinstance(expected, str) else "valid"
        yield Problem(where, field, f"{_describe(error.instance)} is not {noun}")
        return
    if kind == "minimum":
        what = "a valid count" if path and path[-1] == "latest" else "a valid version"
        yield Problem(
            where, field, f"{error.instance} is not {what}: must be {error.validator_value} or more"
        )
        return
    if kind == "maximum":
        what = "a valid count" if path and path[-1] == "latest" else "a valid version"
        yield Problem(
            where, field, f"{error.instance} is not {what}: must be {error.validator_value} or less"
        )
        return
    if kind == "const":
        yield Problem(
            where, field, f"must be {error.validator_value}, got {_describe(error.instance)}"
        )
        return
    if kind == "uniqueItems":
        yield Problem(where, field, "lists a version more than once")
        return
    if kind == "minItems":
        yield Problem(where, field, "must list at least one version")
        return
    if kind == "pattern":
        yield Problem(where, field, f"{_describe(error.instance)} does not match {rule[kind]}")
        return
    if kind == "minLength":
        yield Problem(where, field, "must not be empty")
        return
    yield Problem(where, field, excerpt(error.message, 120))


def read_documents(path: Path) -> list[tuple[str, bytes]]:
    """The desired-state files at `path` (a file, or every *.yaml / *.yml under a folder)."""
    from_kubelet = kubelet_volume.read_generation(path, read_documents)  # a ConfigMap volume
    if from_kubelet is not None:
        return from_kubelet
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in (".yaml", ".yml")
            and not p.is_dir()  # a FIFO or a dangling link too: refused below, by name
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise InputError([Problem(Location(str(path)), "", "no *.yaml or *.yml files here")])
    elif path.exists():  # a FIFO or a device too: refused below, by name
        files = [path]
    else:
        raise InputError([Problem(Location(str(path)), "", "no such file or folder")])
    documents = []
    unreadable = []
    root = os.path.realpath(path) if path.is_dir() else None
    for file in files:
        if root is not None and not _lies_in(os.path.realpath(file), root):
            why = f"a link to a file outside {path}: not read (desired-state files must lie in it)"
            unreadable.append(Problem(Location(str(file)), "", why))
            continue
        try:
            documents.append((str(file), read_bounded(file, MAX_FILE_BYTES + 1)))
        except OSError as error:  # permissions, a folder named *.yaml, a vanished file
            unreadable.append(Problem(Location(str(file)), "", f"cannot read: {error.strerror}"))
    if unreadable:
        raise InputError(unreadable)
    return documents


def _lies_in(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def check_verify_requests(state: DesiredState, desired: Path | None = None) -> None:
    """The verify request files exist and hold a TFS REST predict body; read from `desired`
    (the desired-state folder, or file), they must lie in it, as its YAML files must."""
    problems = []
    root = None
    if desired is not None:
        root = os.path.realpath(desired if desired.is_dir() else desired.parent)
    for model in state.models:
        if model.verify_request is None:
            continue
        where = model.locate("verify.request")
        field = f"models.{model.name}.verify.request"
        if root is not None and not _lies_in(os.path.realpath(model.verify_request), root):
            problems.append(
                Problem(where, field, f"{model.verify_request} is outside {desired}: not read")
            )
            continue
        try:
            raw = read_bounded(Path(model.verify_request), MAX_REQUEST_BYTES + 1)
            if len(raw) > MAX_REQUEST_BYTES:
                raise ValueError(f"larger than the limit of {MAX_REQUEST_BYTES} bytes")
            body = json.loads(raw)
        except FileNotFoundError:
            problems.append(Problem(where, field, f"no such file: {model.verify_request}"))
            continue
        except (OSError, ValueError, RecursionError) as error:  # JSON nested too deeply
            why = error.strerror if isinstance(error, OSError) else error
            problems.append(Problem(where, field, f"cannot read {model.verify_request}: {why}"))
            continue
        if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
            problems.append(
                Problem(where, field, "must hold a predict body with 'instances' or 'inputs'")
            )
    if problems:
        raise InputError(problems)


def load_desired(path: Path, serving_root: str = "/models") -> DesiredState:
    """Read, validate and merge the desired state at `path` (the imperative edge)."""
    state = parse_documents(read_documents(path), serving_root)
    check_verify_requests(state, path)
    return state
