"""The desired state's JSON Schema, the validator that checks it and a quick check of one
model that agrees with it (jsonschema is slow: a model the quick check finds valid is not given
to it)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

API_VERSION = "tfs-reconciler/v1"
MAX_EXPLAINED_MODELS = 500  # per file; past them, a flawed model gets one line


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


def strict_validator(
    for_schema: dict[str, Any], validators: dict[str, Any] | None = None
) -> Draft202012Validator:
    """A Draft 2020-12 validator of `for_schema` that counts 2.0 as no integer, with
    `validators` (keyword to check) in place of jsonschema's own: the desired state's and the
    fleet file's."""
    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer)
    cls = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, validators=validators or {}, type_checker=checker
    )
    made: Draft202012Validator = cls(for_schema)
    return made


@cache
def validator() -> Draft202012Validator:
    return strict_validator(
        inline_refs(schema()), {"pattern": _ecma_pattern, "uniqueItems": _unique_items}
    )


def inline_refs(node: Any, defs: dict[str, Any] | None = None) -> Any:
    """`node` with each `{"$ref": "#/$defs/NAME"}` replaced by that definition (the schema has
    no recursive ones): resolving a reference costs jsonschema more than checking the value,
    and there is one per version and per model (validation 30 % faster)."""
    if defs is None:
        defs = node.get("$defs", {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            return inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: v if k == "$defs" else inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_refs(item, defs) for item in node]
    return node


def schema_errors(data: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    """The schema's errors for `data`. jsonschema takes about 0.3 ms a model, 10 s for a
    document at the size limit: a model the quick check finds valid is not given to it (the
    two agree: tests/unit/test_desired.py checks it on generated models)."""
    models = data.get("models")
    if not isinstance(models, dict):
        yield from validator().iter_errors(data)
        return
    yield from validator().iter_errors({**data, "models": {}})
    flawed = (name for name, spec in models.items() if not valid_model(name, spec))
    for name in itertools.islice(flawed, MAX_EXPLAINED_MODELS):
        alone = {"apiVersion": API_VERSION, "models": {name: models[name]}}
        yield from validator().iter_errors(alone)
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


def valid_model(name: object, spec: object) -> bool:
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
