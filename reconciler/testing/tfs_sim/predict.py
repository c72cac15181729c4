"""Answers for :predict: the real SavedModel when TensorFlow is importable, else a stand-in.

The stand-in (TensorFlow is not a dependency) answers with the shape the signature declares:
for each instance and each output, a tensor of the output's dims without the batch dim
(unknown dims count as 1, an unknown rank as a scalar). Values are deterministic: they come
from a hash of (version, output name, the instance as canonical JSON), and the innermost axis
is normalised to sum to 1 (like a softmax). So the same request to the same version always
gets the same answer, and different versions (almost surely) different ones.

Request forms as TFS: row format ``{"instances": [...]}`` answers ``{"predictions": [...]}``;
columnar ``{"inputs": ...}`` answers ``{"outputs": ...}``. With one output the value is the
tensor itself, with several a dict by output name.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from typing import Any

from reconciler.testing.tfs_sim.core import Servable
from reconciler.testing.tfs_sim.errors import Code, TfsError
from reconciler.testing.tfs_sim.savedmodel import PREDICT_METHOD, Signature, TensorSpec

log = logging.getLogger("tfs_sim.predict")
DEFAULT_SIGNATURE = "serving_default"


def signature_for(servable: Servable, signature_name: str, method: str) -> Signature:
    """The signature a request asks for, checked against the method it calls."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = servable.info.signatures.get(name)
    if signature is None:
        raise TfsError(Code.INVALID_ARGUMENT, f'Serving signature key "{name}" not found.')
    if signature.method_name != method:
        kind = method.rsplit("/", 1)[-1]
        noun = {"predict": "prediction", "classify": "classification", "regress": "regression"}
        raise TfsError(
            Code.INVALID_ARGUMENT,
            f"Expected {noun.get(kind, kind)} signature method_name to be one of "
            f"{{{method}}}. Was: {signature.method_name}",
        )
    return signature


def _values(seed: bytes, count: int) -> list[float]:
    raw: list[float] = []
    counter = 0
    while len(raw) < count:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw.extend((int.from_bytes(digest[i : i + 2], "big") + 1) / 65537 for i in range(0, 32, 2))
        counter += 1
    return raw[:count]


def _fake_tensor(spec: TensorSpec, seed: bytes) -> Any:
    dims = [] if spec.dims is None else [d if d > 0 else 1 for d in spec.dims[1:]]
    if not dims:
        return round(_values(seed, 1)[0], 6)
    inner = dims[-1]
    outer = 1
    for d in dims[:-1]:
        outer *= d
    flat: list[float] = []
    for row in range(outer):
        values = _values(seed + row.to_bytes(4, "big"), inner)
        total = sum(values)
        flat.extend(round(v / total, 6) for v in values)

    def nest(values: list[float], shape: list[int]) -> Any:
        if len(shape) == 1:
            return values
        step = len(values) // shape[0]
        return [nest(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]

    return nest(flat, dims)


def fake_outputs(version: int, signature: Signature, instance: Any) -> dict[str, Any]:
    """The stand-in outputs for one instance, by output name."""
    canonical = json.dumps(instance, sort_keys=True, separators=(",", ":")).encode()
    return {
        name: _fake_tensor(spec, f"{version}/{name}/".encode() + canonical)
        for name, spec in sorted(signature.outputs.items())
    }


def _instances_of_columnar(inputs: Any) -> list[Any]:
    if isinstance(inputs, dict):
        columns = {k: v for k, v in inputs.items() if isinstance(v, list)}
        if not columns:
            return [inputs]
        size = min(len(v) for v in columns.values())
        return [{k: v[i] for k, v in columns.items()} for i in range(size)]
    if isinstance(inputs, list):
        return list(inputs)
    return [inputs]


def predict(servable: Servable, body: Any) -> dict[str, Any]:
    """Answer a REST :predict body for ``servable``; raises TfsError(INVALID_ARGUMENT)."""
    if not isinstance(body, dict):
        raise TfsError(Code.INVALID_ARGUMENT, "JSON Value not an object")
    signature = signature_for(servable, str(body.get("signature_name", "")), PREDICT_METHOD)
    if "instances" in body and "inputs" in body:
        raise TfsError(Code.INVALID_ARGUMENT, "Not both 'instances' and 'inputs' can be specified")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise TfsError(Code.INVALID_ARGUMENT, "Expecting 'instances' to be an list/array")
        rows = [_predict_one(servable, signature, x) for x in instances]
        single = len(signature.outputs) == 1
        return {"predictions": [next(iter(r.values())) if single else r for r in rows]}
    if "inputs" in body:
        rows = [
            _predict_one(servable, signature, x) for x in _instances_of_columnar(body["inputs"])
        ]
        columns = {name: [r[name] for r in rows] for name in sorted(signature.outputs)}
        return {"outputs": next(iter(columns.values())) if len(columns) == 1 else columns}
    raise TfsError(Code.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


def _predict_one(servable: Servable, signature: Signature, instance: Any) -> dict[str, Any]:
    real = _real_model_outputs(servable, signature, instance)
    return real if real is not None else fake_outputs(servable.version, signature, instance)


_tf_models: dict[str, Any] = {}


def _real_model_outputs(
    servable: Servable, signature: Signature, instance: Any
) -> dict[str, Any] | None:
    """Run the real SavedModel when TensorFlow is installed; None when it is not."""
    try:
        tf: Any = importlib.import_module("tensorflow")
    except ImportError:
        return None
    path = str(servable.info.path)
    model = _tf_models.get(path)
    if model is None:
        model = _tf_models[path] = tf.saved_model.load(path)
    fn = model.signatures[DEFAULT_SIGNATURE]
    if isinstance(instance, dict):
        feeds = {k: tf.constant([v]) for k, v in instance.items()}
    else:
        feeds = {next(iter(signature.inputs)): tf.constant([instance])}
    result = fn(**feeds)
    return {k: v.numpy()[0].tolist() for k, v in result.items()}
