"""Verification before promotion: a newly loaded version must answer a known request well."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from reconciler.desired import DesiredModel, DesiredState
from reconciler.errors import StepError
from reconciler.problems import Problem
from reconciler.state import TfsUnreachable
from reconciler.tfs_rest import TfsRest


class VerifyFailed(StepError):
    """A version answered the verification request badly; no label moves to it."""


def _shape(value: Any) -> tuple[int, ...]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def expected_output_shapes(
    metadata: Any, signature: str = "serving_default"
) -> list[tuple[int, ...]]:
    """Per-instance output shapes a signature declares (batch dimension dropped; -1 = any)."""
    try:
        defs = metadata["metadata"]["signature_def"]["signature_def"]
        outputs = defs[signature]["outputs"]
    except (KeyError, TypeError):
        return []
    shapes = []
    for tensor in outputs.values():
        dims = tensor.get("tensor_shape", {}).get("dim", [])
        shapes.append(tuple(int(d.get("size", -1)) for d in dims[1:]))
    return shapes


def _matches(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if len(actual) != len(expected):
        return False
    return all(e in (-1, a) for a, e in zip(actual, expected, strict=True))


def verify_version(rest: TfsRest, model: str, version: int, request_file: str) -> None:
    """Check the request against the version's signature, send it to `model` `version`;
    demand HTTP 200 and outputs of the declared shape."""
    body = json.loads(Path(request_file).read_text("utf-8"))
    what = f"{model} version {version}"
    try:
        metadata = _version_metadata(rest, model, version)
        wrong = request_problems(body, metadata) if metadata is not None else []
        if wrong:
            raise VerifyFailed(
                f"verification of {what}: the request {request_file} does not fit its "
                f"signature: {'; '.join(wrong)}"
            )
        reply = rest.predict(model, body, version=version)
    except TfsUnreachable as error:
        raise VerifyFailed(f"verification of {what}: {error}") from None
    if reply.status != 200 or not isinstance(reply.body, dict):
        detail = reply.body.get("error") if isinstance(reply.body, dict) else reply.body
        raise VerifyFailed(f"verification of {what}: HTTP {reply.status}: {detail}")
    predictions = reply.body.get("predictions", reply.body.get("outputs"))
    if predictions is None:
        raise VerifyFailed(f"verification of {what}: the answer has no predictions or outputs")
    instances = body.get("instances")
    if isinstance(instances, list) and isinstance(predictions, list):
        if len(predictions) != len(instances):
            raise VerifyFailed(
                f"verification of {what}: {len(predictions)} predictions "
                f"for {len(instances)} instances"
            )
        metadata = rest.request("GET", f"/v1/models/{model}/versions/{version}/metadata")
        shapes = expected_output_shapes(metadata.body)
        if len(shapes) == 1:
            for prediction in predictions:
                if not _matches(_shape(prediction), shapes[0]):
                    raise VerifyFailed(
                        f"verification of {what}: a prediction has shape {list(_shape(prediction))}"
                        f", the signature declares {list(shapes[0])}"
                    )


def _version_metadata(rest: TfsRest, model: str, version: int) -> Any | None:
    """GET /v1/models/M/versions/V/metadata; None when TFS does not serve that version."""
    reply = rest.request("GET", f"/v1/models/{quote(model, safe='')}/versions/{version}/metadata")
    return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None


def signature_problems(state: DesiredState, rest: TfsRest) -> tuple[list[Problem], list[str]]:
    """Each verify request checked against the signature of the versions its model's labels
    point at that TFS serves now (their metadata over REST): input errors, with the file and
    line of the `verify.request` field. Versions not loaded yet are checked at apply, once
    loaded, before the request is sent. Also returns notes on what could not be checked."""
    problems: list[Problem] = []
    notes: list[str] = []
    for model in state.models:
        if model.verify_request is None:
            continue
        try:
            body = json.loads(Path(model.verify_request).read_bytes())
        except (OSError, ValueError, RecursionError):
            continue  # load_desired reports it
        try:
            found = _served_metadata(rest, model)
        except TfsUnreachable as error:
            notes.append(f"verify requests not checked against signatures: {error}")
            break
        for version, metadata in found:
            for text in request_problems(body, metadata):
                problems.append(
                    Problem(
                        model.locate("verify.request"),
                        f"models.{model.name}.verify.request",
                        f"{model.verify_request} does not fit the signature of {model.name} "
                        f"version {version}: {text}",
                    )
                )
    return problems, notes


def _served_metadata(rest: TfsRest, model: DesiredModel) -> list[tuple[int, Any]]:
    found = []
    for version in sorted({number for _, number in model.labels}):
        metadata = _version_metadata(rest, model.name, version)
        if metadata is not None:
            found.append((version, metadata))
    return found


# --- the request against the signature (util/json_tensor.cc FillPredictRequestFromJson) --------

_INTEGER_DTYPES = {
    "DT_INT8",
    "DT_INT16",
    "DT_INT32",
    "DT_INT64",
    "DT_UINT8",
    "DT_UINT16",
    "DT_UINT32",
    "DT_UINT64",
}
_FLOAT_DTYPES = {"DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16"}


@dataclass(frozen=True)
class InputSpec:
    dtype: str  # DT_FLOAT, ...
    dims: tuple[int, ...] | None  # with the batch dimension; -1 = any; None: unknown rank


def signature_inputs(metadata: Any, signature: str) -> dict[str, InputSpec] | None:
    """The inputs a metadata answer (GET .../metadata) declares for `signature`: {} when it
    has no such signature, None when the answer does not say (nothing can be judged)."""
    try:
        defs = metadata["metadata"]["signature_def"]["signature_def"]
        if signature not in defs:
            return {}
        inputs = defs[signature]["inputs"]
        found = {}
        for name, tensor in inputs.items():
            shape = tensor.get("tensor_shape", {})
            dims = (
                None
                if shape.get("unknown_rank")
                else tuple(int(d.get("size", -1)) for d in shape.get("dim", []))
            )
            found[str(name)] = InputSpec(str(tensor.get("dtype", "DT_INVALID")), dims)
        return found or None
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


def _fits_dtype(value: Any, dtype: str) -> bool:
    if isinstance(value, list):
        return all(_fits_dtype(v, dtype) for v in value)
    if dtype in _FLOAT_DTYPES:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in _INTEGER_DTYPES:
        return isinstance(value, int) and not isinstance(value, bool)
    if dtype == "DT_STRING":
        return isinstance(value, str) or (isinstance(value, dict) and set(value) == {"b64"})
    if dtype == "DT_BOOL":
        return isinstance(value, bool)
    return True  # a dtype this check does not know: TFS decides


def _shape_of(value: Any) -> tuple[int, ...]:
    return _shape(value)


def _fits_dims(shape: tuple[int, ...], dims: tuple[int, ...] | None) -> bool:
    if dims is None:
        return True
    if len(shape) != len(dims):
        return False
    return all(d in (-1, s) for s, d in zip(shape, dims, strict=True))


def _dims_text(dims: tuple[int, ...] | None) -> str:
    return "any" if dims is None else "[" + ", ".join(map(str, dims)) + "]"


def request_problems(body: Any, metadata: Any) -> list[str]:
    """What in a REST predict body does not fit the signature a metadata answer declares: the
    input names, the values' dtype and the shapes, as TFS's util/json_tensor.cc checks them
    (and the shapes against the signature, which the model itself would refuse)."""
    if not isinstance(body, dict):
        return ["the request is not a JSON object"]
    signature = str(body.get("signature_name", "serving_default"))
    inputs = signature_inputs(metadata, signature)
    if inputs is None:
        return []
    if not inputs:
        return [f"the model has no signature {signature!r}"]
    if ("instances" in body) == ("inputs" in body):
        return [
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        ]
    if "instances" in body:
        return _row_problems(body["instances"], inputs)
    return _columnar_problems(body["inputs"], inputs)


def _row_problems(instances: Any, inputs: dict[str, InputSpec]) -> list[str]:
    if not isinstance(instances, list):
        return ["'instances' is not a list"]
    if not instances:
        return ["No values in 'instances' array"]
    named = [i for i in instances if isinstance(i, dict) and "b64" not in i]
    if len(inputs) > 1 or named:
        columns: dict[str, list[Any]] = {name: [] for name in inputs}
        for index, instance in enumerate(instances):
            if not isinstance(instance, dict):
                return [f"instance {index} is not a JSON object naming the inputs {sorted(inputs)}"]
            for name in sorted(inputs):
                if name not in instance:
                    return [f"JSON object: does not have named input: {name}"]
                columns[name].append(instance[name])
            extra = sorted(set(instance) - set(inputs))
            if extra:
                return [f"instance {index} names input(s) {extra} the signature does not have"]
    else:
        columns = {next(iter(inputs)): list(instances)}
    problems = []
    for name, values in columns.items():
        spec = inputs[name]
        shapes = {_shape_of(v) for v in values}
        if len(shapes) > 1:
            problems.append(f"input {name}: instances have different shapes {sorted(shapes)}")
            continue
        shape = (len(values), *next(iter(shapes)))
        if not _fits_dims(shape, spec.dims):
            problems.append(
                f"input {name}: shape {list(shape)} (batch of {len(values)}), the signature "
                f"declares {_dims_text(spec.dims)}"
            )
        if not _fits_dtype(values, spec.dtype):
            problems.append(f"input {name}: values are not of expected type: {spec.dtype}")
    return problems


def _columnar_problems(given: Any, inputs: dict[str, InputSpec]) -> list[str]:
    if not isinstance(given, dict) and len(inputs) == 1:
        given = {next(iter(inputs)): given}  # one unnamed input
    if not isinstance(given, dict):
        return ["'inputs' is not a JSON object naming the inputs"]
    problems = []
    for name in sorted(inputs):
        if name not in given:
            problems.append(f"Missing named input: {name} in 'inputs' object.")
    extra = sorted(set(given) - set(inputs))
    if extra:
        problems.append(f"'inputs' names input(s) {extra} the signature does not have")
    for name in sorted(set(given) & set(inputs)):
        spec = inputs[name]
        shape = _shape_of(given[name])
        if not _fits_dims(shape, spec.dims):
            problems.append(
                f"input {name}: shape {list(shape)}, the signature declares {_dims_text(spec.dims)}"
            )
        if not _fits_dtype(given[name], spec.dtype):
            problems.append(f"input {name}: values are not of expected type: {spec.dtype}")
    return problems
