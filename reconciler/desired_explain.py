"""The schema's errors, told as problems a person can fix: each names the field, where it
stands in the file and what to write instead."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema

from reconciler.desired_schema import schema_errors
from reconciler.problems import Problem, excerpt
from reconciler.yaml_nodes import Marks, dotted

TYPE_NOUNS = {
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


def describe(value: Any, *, name_floats: bool = True) -> str:
    """A value as a message quotes it: short strings quoted, mappings and lists named; a float
    is marked "(a float)" unless `name_floats` is false (the fleet file's messages)."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"'{excerpt(value)}' (a string)"
    if isinstance(value, float) and name_floats:
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
        yield from _unknown_keys(error, path, rule, marks)
    elif kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield Problem(where, field, f"missing required key '{missing}'")
    elif "propertyNames" in error.schema_path:
        noun = "label" if path and path[-1] == "labels" else "model"
        yield Problem(
            marks.of_key((*path, str(error.instance))),
            dotted((*path, str(error.instance))),
            f"'{excerpt(str(error.instance))}' is not a valid {noun} name."
            f" {rule.get('description', '')}",
        )
    elif kind == "oneOf" and path and path[-1] == "versions":
        yield from _not_a_policy(error, marks)
    else:
        yield Problem(where, field, _message(error, path, rule))


def _unknown_keys(
    error: jsonschema.ValidationError,
    path: tuple[str | int, ...],
    rule: dict[str, Any],
    marks: Marks,
) -> Iterable[Problem]:
    allowed = sorted(rule.get("properties", {}))
    extra = set(error.instance) if isinstance(error.instance, dict) else set()
    for key in sorted(extra - set(allowed)):
        yield Problem(
            marks.of_key((*path, key)),
            dotted((*path, key)),
            f"unknown key '{excerpt(key)}' (allowed: {', '.join(allowed)})",
        )


def _not_a_policy(error: jsonschema.ValidationError, marks: Marks) -> Iterable[Problem]:
    """`versions` matches none of the policies: the errors of the one its shape is meant for
    (a list, a mapping), or one line naming the three."""
    branch = (
        0 if isinstance(error.instance, list) else 1 if isinstance(error.instance, dict) else None
    )
    subs = [e for e in error.context or [] if e.relative_schema_path[0] == branch]
    if branch is not None and subs:
        for sub in subs:
            yield from explain(sub, marks)
        return
    path = tuple(error.absolute_path)
    yield Problem(
        marks.of_value(path),
        dotted(path),
        f"{describe(error.instance)} is not a version policy:"
        " use a list of versions, {latest: N} or all",
    )


def _message(
    error: jsonschema.ValidationError, path: tuple[str | int, ...], rule: dict[str, Any]
) -> str:
    """What is wrong with one value, by the schema rule it breaks."""
    kind = error.validator
    what = "a valid count" if path and path[-1] == "latest" else "a valid version"
    match kind:
        case "type":
            expected = error.validator_value
            noun = TYPE_NOUNS.get(expected, expected) if isinstance(expected, str) else "valid"
            return f"{describe(error.instance)} is not {noun}"
        case "minimum":
            return f"{error.instance} is not {what}: must be {error.validator_value} or more"
        case "maximum":
            return f"{error.instance} is not {what}: must be {error.validator_value} or less"
        case "const":
            return f"must be {error.validator_value}, got {describe(error.instance)}"
        case "uniqueItems":
            return "lists a version more than once"
        case "minItems":
            return "must list at least one version"
        case "pattern":
            return f"{describe(error.instance)} does not match {rule[kind]}"
        case "minLength":
            return "must not be empty"
    return excerpt(error.message, 120)
