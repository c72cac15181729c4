"""The schema's errors, told as problems a person can fix: each names the field, where it
stands in the file and what to write instead."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema

from reconciler.desired_schema import schema_errors
from reconciler.problems import Problem, excerpt
from reconciler.yaml_nodes import Marks, dotted

_TYPE_NOUNS = {
    "integer": "an integer",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
}


def kind_of(value: Any) -> str:
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


def describe(value: Any) -> str:
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


def schema_problems(data: dict[str, Any], marks: Marks) -> Iterable[Problem]:
    errors = sorted(schema_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        yield from explain(error, marks)


def explain(error: jsonschema.ValidationError, marks: Marks) -> Iterable[Problem]:
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
                yield from explain(sub, marks)
            return
        yield Problem(
            where,
            field,
            f"{describe(error.instance)} is not a version policy:"
            " use a list of versions, {latest: N} or all",
        )
        return
    if kind == "type":
        expected = error.validator_value
        noun = _TYPE_NOUNS.get(expected, expected) if isinstance(expected, str) else "valid"
        yield Problem(where, field, f"{describe(error.instance)} is not {noun}")
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
            where, field, f"must be {error.validator_value}, got {describe(error.instance)}"
        )
        return
    if kind == "uniqueItems":
        yield Problem(where, field, "lists a version more than once")
        return
    if kind == "minItems":
        yield Problem(where, field, "must list at least one version")
        return
    if kind == "pattern":
        yield Problem(where, field, f"{describe(error.instance)} does not match {rule[kind]}")
        return
    if kind == "minLength":
        yield Problem(where, field, "must not be empty")
        return
    yield Problem(where, field, excerpt(error.message, 120))
