"""The fleet file: which TFS replicas one desired state is rolled out to, and how. Parsed and
validated like the desired state (its own JSON Schema, every problem with file:line:col)."""

from __future__ import annotations

import json
import math
import os
import posixpath
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema
from jsonschema import Draft202012Validator

from reconciler import yaml_nodes
from reconciler.desired_explain import TYPE_NOUNS, describe
from reconciler.desired_schema import strict_validator
from reconciler.problems import InputError, Location, Problem, excerpt
from reconciler.regular_file import read_bounded
from reconciler.replica import Replica
from reconciler.yaml_nodes import Marks, dotted

API_VERSION = "tfs-reconciler/v1"
MAX_FILE_BYTES = 256 * 1024

OnFailure = Literal["rollback", "pause"]


@dataclass(frozen=True)
class Parallel:
    """Replicas per wave after the canary: a count, or a percentage of the fleet."""

    count: int | None = 1
    percent: int | None = None

    def of(self, total: int) -> int:
        """How many replicas of a fleet of `total` one wave takes (at least 1)."""
        if self.percent is not None:
            return max(1, math.ceil(total * self.percent / 100))
        return max(1, self.count or 1)

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True)
class Rollout:
    canary: int = 1
    max_parallel: Parallel = Parallel()
    max_failures: int = 0
    on_failure: OnFailure = "rollback"


@dataclass(frozen=True)
class DockerDiscovery:
    label: str  # KEY=VALUE or KEY


@dataclass(frozen=True)
class DnsDiscovery:
    name: str
    rest_port: int | None = None
    grpc_port: int | None = None


Discovery = DockerDiscovery | DnsDiscovery


@dataclass(frozen=True)
class FleetSpec:
    """A fleet file, validated: listed replicas (in the file's order), a way to find more, and
    the rollout's rules."""

    replicas: tuple[Replica, ...]
    discover: Discovery | None
    rollout: Rollout
    file: str = ""


@cache
def schema() -> dict[str, Any]:
    text = resources.files("reconciler").joinpath("fleet.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return strict_validator(schema())


def parse_fleet(file: str, raw: bytes) -> FleetSpec:
    """Validate one fleet file given as (display path, raw bytes); relative paths in it are
    taken from the file's folder. Raises InputError with every problem found."""
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(
            [
                Problem(
                    Location(file), "", f"file is larger than the limit of {MAX_FILE_BYTES} bytes"
                )
            ]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputError([Problem(Location(file, line, column), "", "not UTF-8 text")]) from None
    data, marks, problems = yaml_nodes.load(text, file, _advice)
    if data is None:
        raise InputError(problems or [Problem(Location(file, 1, 1), "", "empty fleet file")])
    if not isinstance(data, dict):
        raise InputError(
            [Problem(marks.of_value(()), "", "expected a mapping with apiVersion and fleet")]
        )
    reported = {p.field for p in problems if p.field}
    problems.extend(p for p in _schema_problems(data, marks) if p.field not in reported)
    if problems:
        raise InputError(problems)
    fleet: dict[str, Any] = data["fleet"]
    folder = posixpath.dirname(file)
    replicas = tuple(_replica(spec, folder) for spec in fleet.get("replicas", []))
    problems.extend(_duplicates(replicas, marks))
    if not replicas and "discover" not in fleet:
        problems.append(
            Problem(
                marks.of_value(("fleet",)),
                "fleet",
                "no replicas: list them under replicas, or find them with discover",
            )
        )
    if problems:
        raise InputError(problems)
    return FleetSpec(replicas, _discovery(fleet.get("discover")), _rollout(fleet), file)


def load_fleet(path: Path) -> FleetSpec:
    """Read and validate the fleet file at `path` (the imperative edge). A link is followed
    only to a file in the link's own folder (a Kubernetes ConfigMap's `..data/`), as the
    desired state's are: errors quote the file, and must not quote a secret it points at. A
    FIFO or a device is refused, never waited on."""
    folder = os.path.realpath(path.parent)
    real = os.path.realpath(path)
    if not real.startswith(folder.rstrip("/") + "/"):
        why = f"a link to a file outside {path.parent}: not read (point --fleet at the file)"
        raise InputError([Problem(Location(str(path)), "", why)])
    try:
        raw = read_bounded(path, MAX_FILE_BYTES + 1)
    except OSError as error:
        why = error.strerror or str(error)
        raise InputError([Problem(Location(str(path)), "", f"cannot read: {why}")]) from None
    return parse_fleet(str(path), raw)


def _advice(path: yaml_nodes.Path, kind: yaml_nodes.Kind) -> str:
    match path:
        case ("fleet", "replicas", int(), _) | ("apiVersion",):
            return "quote it"
    return yaml_nodes.plain_advice(path, kind)


def _replica(spec: dict[str, Any], folder: str) -> Replica:
    def local(key: str) -> Path | None:
        value = spec.get(key)
        return Path(posixpath.join(folder, value)) if isinstance(value, str) else None

    return Replica(
        name=spec["name"],
        rest=spec["rest"].rstrip("/"),
        grpc=spec.get("grpc"),
        config=local("config"),
        models_dir=local("models_dir"),
    )


def _duplicates(replicas: tuple[Replica, ...], marks: Marks) -> list[Problem]:
    found = []
    first: dict[str, int] = {}
    configs: dict[Path, int] = {}
    rests: dict[str, int] = {}
    for index, replica in enumerate(replicas):
        here = ("fleet", "replicas", index)
        other_rest = rests.setdefault(replica.rest.lower(), index)
        if other_rest != index:
            found.append(
                Problem(
                    marks.of_value((*here, "rest")),
                    dotted((*here, "rest")),
                    f"replica '{replicas[other_rest].name}' has this REST address too: one TFS"
                    " listed twice would be counted twice, loaded and flipped as two",
                )
            )
        if replica.name in first:
            line = marks.of_value(("fleet", "replicas", first[replica.name], "name")).line
            found.append(
                Problem(
                    marks.of_value((*here, "name")),
                    dotted((*here, "name")),
                    f"replica '{replica.name}' is already listed (line {line})",
                )
            )
        first.setdefault(replica.name, index)
        if replica.config is not None:
            other = configs.setdefault(Path(posixpath.normpath(replica.config)), index)
            if other != index:
                found.append(
                    Problem(
                        marks.of_value((*here, "config")),
                        dotted((*here, "config")),
                        f"replica '{replicas[other].name}' has this models.config too: each"
                        " replica's file holds what that replica serves at each moment (a"
                        " models.config all replicas poll is --config, written once the"
                        " whole fleet is done)",
                    )
                )
    return found


def _discovery(spec: dict[str, Any] | None) -> Discovery | None:
    if spec is None:
        return None
    if "docker" in spec:
        return DockerDiscovery(spec["docker"]["label"])
    dns = spec["dns"]
    return DnsDiscovery(dns["name"], dns.get("rest_port"), dns.get("grpc_port"))


def _rollout(fleet: dict[str, Any]) -> Rollout:
    spec: dict[str, Any] = fleet.get("rollout", {})
    parallel = spec.get("max_parallel", 1)
    chosen = (
        Parallel(None, int(parallel.rstrip("%")))
        if isinstance(parallel, str)
        else Parallel(parallel)
    )
    return Rollout(
        canary=spec.get("canary", 1),
        max_parallel=chosen,
        max_failures=spec.get("max_failures", 0),
        on_failure=spec.get("on_failure", "rollback"),
    )


def _describe(value: Any) -> str:
    return describe(value, name_floats=False)


def _schema_problems(data: dict[str, Any], marks: Marks) -> list[Problem]:
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [p for error in errors for p in _explain(error, marks)]


def _explain(error: jsonschema.ValidationError, marks: Marks) -> list[Problem]:
    path = tuple(error.absolute_path)
    field = dotted(path)
    where = marks.of_value(path)
    kind = error.validator
    rule: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if kind == "additionalProperties":
        allowed = sorted(rule.get("properties", {}))
        extra = set(error.instance) if isinstance(error.instance, dict) else set()
        return [
            Problem(
                marks.of_key((*path, key)),
                dotted((*path, key)),
                f"unknown key '{excerpt(key)}' (allowed: {', '.join(allowed)})",
            )
            for key in sorted(extra - set(allowed))
        ]
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [Problem(where, field, f"missing required key '{missing}'")]
    if kind in ("minProperties", "maxProperties"):
        return [Problem(where, field, "give exactly one way: docker or dns")]
    if kind == "oneOf" and path and path[-1] == "max_parallel":
        return [
            Problem(
                where,
                field,
                f"{_describe(error.instance)} is not a wave size: a number of replicas (1 or"
                " more) or a percentage such as 25%",
            )
        ]
    if kind == "type":
        expected = error.validator_value
        noun = TYPE_NOUNS.get(expected, expected) if isinstance(expected, str) else "valid"
        return [Problem(where, field, f"{_describe(error.instance)} is not {noun}")]
    if kind in ("minimum", "maximum"):
        bound = "or more" if kind == "minimum" else "or less"
        return [
            Problem(
                where, field, f"{error.instance} is out of range: {error.validator_value} {bound}"
            )
        ]
    if kind == "const":
        return [
            Problem(
                where, field, f"must be {error.validator_value}, got {_describe(error.instance)}"
            )
        ]
    if kind == "enum":
        choices = " or ".join(str(c) for c in rule.get("enum", ()))
        return [Problem(where, field, f"{_describe(error.instance)} is not {choices}")]
    if kind == "pattern":
        why = rule.get("description", f"must match {rule.get('pattern')}")
        return [Problem(where, field, f"{_describe(error.instance)} is not valid: {why}")]
    if kind == "minLength":
        return [Problem(where, field, "must not be empty")]
    return [Problem(where, field, excerpt(error.message, 120))]
