"""TFS's gRPC ModelService, as a client: push a whole config, read model status."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.errors import StepError
from reconciler.state import LiveModel, LiveVersion, TfsUnreachable
from reconciler.tfs_config import ServingConfig, to_proto

if TYPE_CHECKING:
    import grpc

# grpc and TFS's messages are imported when used, not with this module: `diff`, `status` and the
# other commands that never push a config spare its import (~40 ms of every start).


def _reload_request(config: ServingConfig) -> Any:
    from reconciler.proto import tensorflow_serving_pb2 as pb

    return pb.ReloadConfigRequest(config=to_proto(config))


class ReloadRejected(StepError):
    """TFS refused a config, or failed part-way through it: a failed reload may already have
    put the new config and labels in force (ServerCore::ReloadConfig), so read what serves."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"TFS refused the config ({code}): {message}")


class ReloadAbandoned(StepError):
    """A push given up on while TFS still worked on it; the message says why."""


WATCH_EVERY = 0.25  # seconds between the checks of a push that TFS works on


class TfsGrpc:
    """One channel to a TFS gRPC port. Every call carries a deadline."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self.target = target
        import grpc

        from reconciler.proto import tensorflow_serving_pb2_grpc as pb_grpc

        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._models: Any = pb_grpc.ModelServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._prepared: tuple[ServingConfig, Any] | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TfsGrpc:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether the gRPC port accepts a connection within `timeout` seconds."""
        import grpc

        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def prepare(self, config: ServingConfig) -> None:
        """Before a push that must leave at a set moment (the fleet's flip, at its gate): the
        request built now, so that `reload(config)` then only sends. (The channel is the one
        the rollout's prepare pushes already connected: one client per replica.)"""
        self._prepared = (config, _reload_request(config))

    def _request(self, config: ServingConfig) -> Any:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] is config:
            return prepared[1]
        return _reload_request(config)

    def reload(
        self,
        config: ServingConfig,
        timeout: float | None = None,
        give_up: Callable[[], str | None] | None = None,
    ) -> None:
        """HandleReloadConfigRequest: TFS replaces its whole config with `config`.

        Returns once TFS accepted it (new versions of existing models may still be loading).
        Raises ReloadRejected when TFS refuses, TfsUnreachable when it does not answer in time,
        ReloadAbandoned when `give_up` (asked while TFS works on the push) names a reason.
        """
        import grpc

        from reconciler.proto.error_codes_pb2 import Code

        request = self._request(config)
        limit = timeout if timeout is not None else self.timeout
        try:
            if give_up is None:
                reply = self._models.HandleReloadConfigRequest(request, timeout=limit)
            else:
                reply = self._watched(request, limit, give_up)
        except grpc.RpcError as error:
            raise _translate(error, self.target) from None
        if reply.status.error_code != Code.OK:
            raise ReloadRejected(Code.Name(reply.status.error_code), reply.status.error_message)

    def _watched(self, request: Any, limit: float, give_up: Callable[[], str | None]) -> Any:
        import grpc

        call = self._models.HandleReloadConfigRequest.future(request, timeout=limit)
        while True:
            try:
                return call.result(timeout=WATCH_EVERY)
            except grpc.FutureTimeoutError:
                reason = give_up()
                if reason is not None:
                    call.cancel()
                    raise ReloadAbandoned(reason) from None

    def model_status(self, name: str) -> LiveModel:
        import grpc

        from reconciler.proto import tensorflow_serving_pb2 as pb
        from reconciler.proto.error_codes_pb2 import Code

        request = pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name=name))
        try:
            reply = self._models.GetModelStatus(request, timeout=self.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return LiveModel(name, found=False)
            raise _translate(error, self.target) from None
        versions = tuple(
            LiveVersion(
                version=entry.version,
                state=pb.ModelVersionStatus.State.Name(entry.state),
                error_code=Code.Name(entry.status.error_code),
                error_message=entry.status.error_message,
            )
            for entry in reply.model_version_status
        )
        return LiveModel(name, found=True, versions=versions)


def _translate(error: grpc.RpcError, target: str) -> Exception:
    import grpc

    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return TfsUnreachable(f"TFS gRPC at {target}: {code.name}: {error.details()}")
    return ReloadRejected(code.name, error.details() or "")
