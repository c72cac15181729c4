"""Verification before promotion: a newly loaded version must answer a known request well."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconciler.observe import TfsUnreachable
from reconciler.tfs_rest import TfsRest


class VerifyFailed(Exception):
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
    """Send the request to `model` `version`; demand HTTP 200 and outputs of the declared shape."""
    body = json.loads(Path(request_file).read_text("utf-8"))
    what = f"{model} version {version}"
    try:
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
