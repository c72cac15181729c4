"""``tensorflow.serving.PredictionService`` over gRPC: Predict, GetModelMetadata, Classify,
Regress, MultiInference, as ``model_servers/prediction_service_impl.cc`` wires them.

The model spec is resolved as ``ServerCore::ServableRequestFromModelSpec`` and
``GetServableHandle`` do (a missing model is NOT_FOUND ``Servable not found for request:
...``); Predict follows ``predict_util.cc`` ``RunPredict`` (see :mod:`.predict`),
GetModelMetadata ``get_model_metadata_impl.cc``, Classify/Regress ``classifier.cc`` and
``regressor.cc``, MultiInference ``multi_inference.cc`` and ``multi_inference_helper.cc``.
The simulated SavedModels have predict signatures, so Classify, Regress and MultiInference end
in the signature checks' errors, as on TFS for such a model.
"""

from __future__ import annotations

import logging
import struct

import grpc

from reconciler.proto import tensorflow_core_pb2 as tf_pb
from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.proto import tensorflow_serving_pb2_grpc as pb_grpc
from reconciler.testing.tfs_sim.core import Servable, ServerCore
from reconciler.testing.tfs_sim.errors import Code, TfsError, grpc_code
from reconciler.testing.tfs_sim.json_tensor import DenseTensor
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.predict import (
    CLASSIFY_METHOD,
    DEFAULT_SIGNATURE,
    REGRESS_METHOD,
    classify_or_regress,
    classify_or_regress_signature,
    predict,
    signature_def,
)

log = logging.getLogger("tfs_sim.grpc")
SIGNATURE_DEF = "signature_def"

# TensorProto's typed value field and tensor_content's struct format, by DataType.
_FIELDS: dict[int, tuple[str, str]] = {
    1: ("float_val", "f"),
    2: ("double_val", "d"),
    3: ("int_val", "i"),
    4: ("int_val", "B"),
    5: ("int_val", "h"),
    6: ("int_val", "b"),
    7: ("string_val", ""),
    9: ("int64_val", "q"),
    10: ("bool_val", "?"),
    22: ("uint32_val", "I"),
    23: ("uint64_val", "Q"),
}


def resolve(core: ServerCore, spec: pb.ModelSpec) -> Servable:
    """``ServableRequestFromModelSpec`` + ``GetServableHandle``."""
    if not spec.name:
        raise TfsError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return core.resolve(spec.name, version=spec.version.value)
    if choice == "version_label":
        return core.resolve(spec.name, label=spec.version_label)
    return core.resolve(spec.name)


def tensor_from_proto(proto: tf_pb.TensorProto) -> DenseTensor:
    """``Tensor::FromProto``: the typed values, or ``tensor_content``."""
    dtype = int(proto.dtype)
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    count = 1
    for d in shape:
        count *= d
    field, fmt = _FIELDS.get(dtype, ("", ""))
    if not field:
        raise TfsError(Code.INVALID_ARGUMENT, "tensor parsing error: unsupported dtype")
    if proto.tensor_content and fmt:
        size = struct.calcsize(fmt)
        values: list[object] = list(
            struct.unpack(f"<{len(proto.tensor_content) // size}{fmt}", proto.tensor_content)
        )
    else:
        values = list(getattr(proto, field))
    if values and len(values) < count:  # TensorFlow repeats the last value
        values += [values[-1]] * (count - len(values))
    if len(values) != count:
        raise TfsError(Code.INVALID_ARGUMENT, "tensor parsing error")
    return DenseTensor(dtype, shape, tuple(values))


def tensor_to_proto(tensor: DenseTensor) -> tf_pb.TensorProto:
    proto = tf_pb.TensorProto(dtype=tensor.dtype)  # type: ignore[arg-type]
    for d in tensor.shape:
        proto.tensor_shape.dim.add(size=d)
    field, _ = _FIELDS.get(tensor.dtype, ("float_val", "f"))
    getattr(proto, field).extend(tensor.values)
    return proto


class PredictionService(pb_grpc.PredictionServiceServicer):
    """The servicer, over a ServerCore."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def _fail(self, context: grpc.ServicerContext, error: TfsError) -> None:
        context.set_code(grpc_code(error.code))
        context.set_details(error.message)

    def Predict(
        self, request: pb.PredictRequest, context: grpc.ServicerContext
    ) -> pb.PredictResponse:
        response = pb.PredictResponse()
        try:
            if not request.HasField("model_spec"):
                raise TfsError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            servable = resolve(self._core, request.model_spec)
            inputs = {k: tensor_from_proto(v) for k, v in request.inputs.items()}
            signature_name = request.model_spec.signature_name
            outputs = predict(servable, signature_name, inputs, list(request.output_filter))
        except TfsError as e:
            self._fail(context, e)
            return response
        response.model_spec.name = servable.model
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name or DEFAULT_SIGNATURE
        for alias, tensor in outputs.items():
            response.outputs[alias].CopyFrom(tensor_to_proto(tensor))
        log_event(log, "predict", model=servable.model, version=servable.version, via="grpc")
        return response

    def GetModelMetadata(
        self, request: pb.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.GetModelMetadataResponse:
        response = pb.GetModelMetadataResponse()
        try:
            if not request.HasField("model_spec"):
                raise TfsError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            if not request.metadata_field:
                raise TfsError(
                    Code.INVALID_ARGUMENT,
                    "GetModelMetadataRequest must specify at least one metadata_field",
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF:
                    raise TfsError(
                        Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported"
                    )
            servable = resolve(self._core, request.model_spec)
        except TfsError as e:
            self._fail(context, e)
            return response
        signatures = pb.SignatureDefMap()
        for name, signature in servable.info.signatures.items():
            signatures.signature_def[name].CopyFrom(signature_def(signature))
        response.model_spec.name = servable.model
        response.model_spec.version.value = servable.version
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response

    def _classify_or_regress(
        self,
        request: pb.ClassificationRequest | pb.RegressionRequest,
        context: grpc.ServicerContext,
        kind: str,
    ) -> None:
        try:
            if not request.HasField("model_spec"):
                raise TfsError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            servable = resolve(self._core, request.model_spec)
            classify_or_regress(servable, request.model_spec.signature_name, kind)
        except TfsError as e:
            self._fail(context, e)

    def Classify(
        self, request: pb.ClassificationRequest, context: grpc.ServicerContext
    ) -> pb.ClassificationResponse:
        self._classify_or_regress(request, context, "classify")
        return pb.ClassificationResponse()

    def Regress(
        self, request: pb.RegressionRequest, context: grpc.ServicerContext
    ) -> pb.RegressionResponse:
        self._classify_or_regress(request, context, "regress")
        return pb.RegressionResponse()

    def MultiInference(
        self, request: pb.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> pb.MultiInferenceResponse:
        """``RunMultiInferenceWithServerCore`` then ``TensorFlowMultiInferenceRunner::Infer``."""
        try:
            spec = request.tasks[0].model_spec if request.tasks else pb.ModelSpec()
            servable = resolve(self._core, spec)
            model = ""
            seen: set[str] = set()
            for task in request.tasks:
                if not task.model_spec.name:
                    raise TfsError(
                        Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name."
                    )
                if model and model != task.model_spec.name:
                    raise TfsError(
                        Code.INVALID_ARGUMENT,
                        "All ModelSpecs in a MultiInferenceRequest must access the same model "
                        "name.",
                    )
                model = task.model_spec.name
                name = task.model_spec.signature_name or DEFAULT_SIGNATURE
                if name in seen:
                    raise TfsError(
                        Code.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {name}"
                    )
                seen.add(name)
                if name not in servable.info.signatures:
                    raise TfsError(
                        Code.INVALID_ARGUMENT,
                        f"Requested signature not found in model graph: {name}",
                    )
                if task.method_name == CLASSIFY_METHOD:
                    classify_or_regress_signature(servable, name, "classify")
                elif task.method_name == REGRESS_METHOD:
                    classify_or_regress_signature(servable, name, "regress")
                else:
                    raise TfsError(
                        Code.UNIMPLEMENTED,
                        f"Unsupported signature method_name: {task.method_name}",
                    )
            raise TfsError(Code.UNIMPLEMENTED, "tfs-sim: MultiInference is not simulated")
        except TfsError as e:
            self._fail(context, e)
        return pb.MultiInferenceResponse()
