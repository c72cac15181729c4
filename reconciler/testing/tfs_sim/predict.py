"""Predict, classify and regress on a loaded version, for REST and gRPC alike.

The checks and their texts follow TFS: ``servables/tensorflow/predict_util.cc``
(``RunPredict``: the signature by name, FAILED_PRECONDITION ``Serving signature key "X" not
found.``; ``VerifyRequestInputsSize``; ``output_filter``), ``classifier.cc`` and
``regressor.cc`` (``PreProcessClassification``/``PreProcessRegression``: which signatures a
classify or regress request can use). The method name is checked only with
``--enable_signature_method_name_check`` (off by default, as TFS: a predict request on a
classify signature is answered).

What TensorFlow itself would do when running the graph is played by a stand-in (TensorFlow is
not a dependency): an input whose shape the signature's does not accept fails with
INVALID_ARGUMENT (a simulator text: TensorFlow's own message depends on the graph), and the
outputs have the shape the signature declares for each batch row (unknown dims count as 1, an
unknown rank as a scalar), with deterministic values from a hash of (version, output name, the
row's input values), the innermost axis normalised to sum to 1 (like a softmax). So the same
request to the same version always gets the same answer, different versions (almost surely)
different ones.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reconciler.proto import tensorflow_core_pb2 as tf_pb
from reconciler.testing.tfs_sim.core import Servable
from reconciler.testing.tfs_sim.errors import Code, TfsError
from reconciler.testing.tfs_sim.json_tensor import DenseTensor
from reconciler.testing.tfs_sim.savedmodel import Signature, TensorSpec

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_method_name_check = [False]


def set_method_name_check(enabled: bool) -> None:
    """``SetSignatureMethodNameCheckFeature`` (server.cc): a process-wide switch in TFS too."""
    _method_name_check[0] = enabled


def signature_def(signature: Signature) -> tf_pb.SignatureDef:
    """The SignatureDef proto (for metadata and for TFS's ``signature.DebugString()``)."""
    proto = tf_pb.SignatureDef(method_name=signature.method_name)
    for target, specs in ((proto.inputs, signature.inputs), (proto.outputs, signature.outputs)):
        for alias, spec in sorted(specs.items()):
            info = target[alias]
            info.name = spec.name
            info.dtype = spec.dtype  # type: ignore[assignment]
            if spec.dims is None:
                info.tensor_shape.unknown_rank = True
            else:
                for d in spec.dims:
                    info.tensor_shape.dim.add(size=d)
    return proto


def debug_string(signature: Signature) -> str:
    """``SignatureDef::DebugString()`` (protobuf text format)."""
    from google.protobuf import text_format

    return text_format.MessageToString(signature_def(signature))


def predict_signature(servable: Servable, signature_name: str) -> Signature:
    """``RunPredict``'s signature lookup."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = servable.info.signatures.get(name)
    if signature is None:
        raise TfsError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
    return signature


def _invalid(message: str) -> TfsError:
    return TfsError(Code.INVALID_ARGUMENT, message)


def check_inputs(signature: Signature, inputs: dict[str, DenseTensor]) -> None:
    """``VerifyRequestInputsSize`` and the aliases (``saved_model::GetInputValues``)."""
    request, expected = sorted(inputs), sorted(signature.inputs)
    if len(request) != len(expected):
        extra = sorted(set(request) - set(expected))
        missing = sorted(set(expected) - set(request))
        raise _invalid(
            f"input size does not match signature: {len(request)}!={len(expected)} "
            f"len({{{','.join(request)}}}) != len({{{','.join(expected)}}}). Sent extra: "
            f"{{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    for alias in request:
        if alias not in signature.inputs:
            raise _invalid(
                f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                f"the set {{{','.join(expected)}}}."
            )
    for alias, tensor in sorted(inputs.items()):
        spec = signature.inputs[alias]
        if spec.dtype != tensor.dtype:
            raise _invalid(
                f"Expects arg[{expected.index(alias)}] to be {_dtype(spec.dtype)} but "
                f"{_dtype(tensor.dtype)} is provided"
            )
        if spec.dims is not None and (
            len(spec.dims) != len(tensor.shape)
            or any(d >= 0 and d != s for d, s in zip(spec.dims, tensor.shape, strict=True))
        ):
            raise _invalid(
                f"tfs-sim: input {alias} has shape {_shape(tensor.shape)}, which the signature's "
                f"{_shape(spec.dims)} does not accept (TensorFlow would fail the run)"
            )


def _dtype(dtype: int) -> str:
    from reconciler.testing.tfs_sim.json_tensor import DTYPE_STRINGS

    return DTYPE_STRINGS.get(dtype, str(dtype))


def _shape(dims: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def output_aliases(signature: Signature, output_filter: list[str]) -> list[str]:
    """``PreProcessPrediction``'s outputs: the filter (checked) or every output."""
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise _invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                f"the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise _invalid(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)


def _values(seed: bytes, count: int) -> list[float]:
    raw: list[float] = []
    counter = 0
    while len(raw) < count:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw.extend((int.from_bytes(digest[i : i + 2], "big") + 1) / 65537 for i in range(0, 32, 2))
        counter += 1
    return raw[:count]


def _row_tensor(spec: TensorSpec, seed: bytes) -> tuple[tuple[int, ...], list[float]]:
    dims = [] if spec.dims is None else [d if d > 0 else 1 for d in spec.dims[1:]]
    if not dims:
        return (), [_values(seed, 1)[0]]
    inner = dims[-1]
    outer = 1
    for d in dims[:-1]:
        outer *= d
    flat: list[float] = []
    for row in range(outer):
        values = _values(seed + row.to_bytes(4, "big"), inner)
        total = sum(values)
        flat.extend(v / total for v in values)
    return tuple(dims), flat


def _batch(inputs: dict[str, DenseTensor]) -> int:
    shapes = [t.shape for t in inputs.values() if t.shape]
    return shapes[0][0] if shapes else 1


def _row_seed(inputs: dict[str, DenseTensor], batch: int, row: int) -> bytes:
    parts: dict[str, Any] = {}
    for name, tensor in sorted(inputs.items()):
        per_row = len(tensor.values) // batch if tensor.shape and batch else len(tensor.values)
        chunk = (
            tensor.values[row * per_row : (row + 1) * per_row] if tensor.shape else tensor.values
        )
        parts[name] = [v.decode("latin-1") if isinstance(v, bytes) else v for v in chunk]
    return json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()


def run(
    servable: Servable, signature: Signature, inputs: dict[str, DenseTensor], aliases: list[str]
) -> dict[str, DenseTensor]:
    """The stand-in for ``session->Run``: one output tensor per alias, batch-major."""
    batch = _batch(inputs)
    outputs: dict[str, DenseTensor] = {}
    for alias in aliases:
        spec = signature.outputs[alias]
        values: list[float] = []
        row_shape: tuple[int, ...] = ()
        for row in range(batch):
            seed = f"{servable.version}/{alias}/".encode() + _row_seed(inputs, batch, row)
            row_shape, flat = _row_tensor(spec, seed)
            values.extend(flat)
        outputs[alias] = DenseTensor(spec.dtype or 1, (batch, *row_shape), tuple(values))
    return outputs


def predict(
    servable: Servable,
    signature_name: str,
    inputs: dict[str, DenseTensor],
    output_filter: list[str] | None = None,
) -> dict[str, DenseTensor]:
    """``RunPredict`` with the stand-in run."""
    signature = predict_signature(servable, signature_name)
    methods = (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD)
    if _method_name_check[0] and signature.method_name not in methods:  # VerifySignature
        raise TfsError(
            Code.INTERNAL,
            f"Expected prediction signature method_name to be one of {{{', '.join(methods)}}}. "
            f"Was: {signature.method_name}",
        )
    check_inputs(signature, inputs)
    return run(servable, signature, inputs, output_aliases(signature, output_filter or []))


def classify_or_regress_signature(servable: Servable, signature_name: str, kind: str) -> Signature:
    """The signature a Classify or Regress call uses (classifier.cc, regressor.cc)."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = servable.info.signatures.get(name)
    if signature is None:
        raise _invalid(f"No signature was found with the name: {name}")
    noun = "classification" if kind == "classify" else "regression"
    method = CLASSIFY_METHOD if kind == "classify" else REGRESS_METHOD
    if _method_name_check[0] and signature.method_name != method:
        raise _invalid(
            f"Expected {noun} signature method_name to be {method}. Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if kind == "classify" and len(signature.outputs) not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if kind == "regress" and len(signature.outputs) != 1:
        raise _invalid("Expected one output Tensor.")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise _invalid(f"No {noun} inputs found in SignatureDef: {debug_string(signature)}")
    if kind == "classify" and not {CLASSIFY_CLASSES, CLASSIFY_SCORES} & set(signature.outputs):
        raise _invalid(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {debug_string(signature)}'
        )
    if kind == "regress" and REGRESS_OUTPUTS not in signature.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: {debug_string(signature)}")
    return signature


def classify_or_regress(servable: Servable, signature_name: str, kind: str) -> None:
    """A Classify/Regress call: the simulator serves SavedModels with predict signatures, so
    this ends in the signature's error (as for the lab's predict-only model) or, for a real
    classify/regress signature, UNIMPLEMENTED (not simulated)."""
    classify_or_regress_signature(servable, signature_name, kind)
    raise TfsError(Code.UNIMPLEMENTED, f"tfs-sim: {kind} on a {kind} signature is not simulated")
