"""``tensorflow.serving.ModelService`` over gRPC: GetModelStatus, HandleReloadConfigRequest
(``model_servers/model_service_impl.cc``); the server also serves PredictionService
(:mod:`.prediction_service`).

Errors are a non-OK gRPC status with TFS's code (``tensorflow.error.Code`` numbers are the
gRPC ones) and message. The ReloadConfigResponse's ``status`` is filled too, but as in TFS
(C++ gRPC) a response is not sent with a non-OK status, so clients see the gRPC status.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.proto import tensorflow_serving_pb2_grpc as pb_grpc
from reconciler.testing.tfs_sim.core import ServerCore
from reconciler.testing.tfs_sim.errors import Code, TfsError, grpc_code
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.prediction_service import PredictionService

log = logging.getLogger("tfs_sim.grpc")
RELOAD_TYPE_ERROR = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
    "is currently supported"
)


class ModelService(pb_grpc.ModelServiceServicer):
    """The servicer, over a ServerCore."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> pb.GetModelStatusResponse:
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = pb.GetModelStatusResponse()
        try:
            if not request.HasField("model_spec"):  # get_model_status_impl.cc
                raise TfsError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            statuses = self._core.status(spec.name, version)
        except TfsError as e:
            context.set_code(grpc_code(e.code))
            context.set_details(e.message)
            return response
        for s in statuses:
            entry = response.model_version_status.add(version=s.version, state=int(s.state))
            if s.error is not None:
                entry.status.error_code = int(s.error.code)  # type: ignore[assignment]
                entry.status.error_message = s.error.message
        return response

    def HandleReloadConfigRequest(
        self, request: pb.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> pb.ReloadConfigResponse:
        response = pb.ReloadConfigResponse()
        log_event(log, "reload_request", models=len(request.config.model_config_list.config))
        try:
            # model_service_impl.cc: only a ModelConfigList reaches ServerCore::ReloadConfig.
            if request.config.WhichOneof("config") != "model_config_list":
                raise TfsError(Code.INVALID_ARGUMENT, RELOAD_TYPE_ERROR)
            self._core.reload(request.config)
        except TfsError as e:
            log_event(log, "reload_refused", logging.WARNING, code=e.code.name, message=e.message)
            response.status.error_code = int(e.code)  # type: ignore[assignment]
            response.status.error_message = e.message
            context.set_code(grpc_code(e.code))
            context.set_details(e.message)
        return response


def start_grpc_server(core: ServerCore, port: int, workers: int = 64) -> tuple[grpc.Server, int]:
    """Serve ModelService on 0.0.0.0:port; returns the server and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[("grpc.so_reuseport", 0)],  # fail on a taken port instead of sharing it
    )
    pb_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)  # type: ignore[no-untyped-call]
    pb_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"0.0.0.0:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC port {port}")
    server.start()
    return server, bound
