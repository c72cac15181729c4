"""The simulator process: flags -> ServerCore -> clock -> gRPC and REST servers, until a signal.

Start-up follows ``model_servers/main.cc`` and ``Server::BuildAndStart`` (server.cc): the
first config (``--model_config_file``, or ``--model_name``/``--model_base_path``) is applied
and every model waited for *before* the ports open. A start-up error prints
``Failed to start server. Error: CODE: message`` on stdout and exits 255 (``return -1``): a
config file that cannot be read or parsed (``Invalid protobuf file: 'PATH'``, with protobuf's
own text-format error logged), a refused first config (e.g. a label on a version not loaded
yet without ``--allow_version_labels_for_unavailable_models``), a model whose latest version
fails to load (``N servable(s) did not become available``), a gRPC port that cannot be bound.
A first config with ``custom_model_config`` aborts (``LoadCustomModelConfig``: LOG(FATAL)).
SIGTERM and SIGINT stop it cleanly (exit code 0).

Loops (daemon threads): ``clock`` moves versions along every 20 ms and runs the file-system
poll every ``--file_system_poll_wait_seconds`` (see :mod:`.core`); ``config_file_poll``
re-reads and re-applies the config file every ``--model_config_file_poll_wait_seconds``
(``PollFilesystemAndReloadConfig``: on every poll, not only when the file changed; a config
pushed over gRPC is overridden by the file's at the next poll).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.signals import SignalThread
from reconciler.testing.tfs_sim import logs
from reconciler.testing.tfs_sim.core import CoreOptions, ServerCore
from reconciler.testing.tfs_sim.disk import PathMap
from reconciler.testing.tfs_sim.errors import Code, Fatal, TfsError
from reconciler.testing.tfs_sim.events import EventLog
from reconciler.testing.tfs_sim.flags import Flags, parse_flags
from reconciler.testing.tfs_sim.grpc_service import start_grpc_server
from reconciler.testing.tfs_sim.lifecycle import LoadTiming
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.model_config import parse_config_text
from reconciler.testing.tfs_sim.predict import set_method_name_check
from reconciler.testing.tfs_sim.rest import RestServer

log = logging.getLogger("tfs_sim.server")
CLOCK_TICK_SECONDS = 0.02


def read_config_file(path: str, shown_as: str = "") -> pb.ModelServerConfig:
    """``ParseProtoTextFile<ModelServerConfig>``: TfsError when unreadable or unparsable
    (protobuf's own parse error is logged, as TextFormat's error collector does)."""
    shown = shown_as or path
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError as e:
        raise TfsError(Code.NOT_FOUND, f"{shown}; No such file or directory") from e
    except OSError as e:
        raise TfsError(Code.FAILED_PRECONDITION, f"{shown}; {e.strerror or e}") from e
    try:
        return parse_config_text(text, shown)
    except TfsError as e:
        if e.detail:
            log.error("[libprotobuf ERROR] %s", e.detail)
        raise


def first_config(flags: Flags, config_file: str) -> pb.ModelServerConfig:
    """The config to start with (``Server::BuildAndStart``): ``config_file``
    (--model_config_file on the host), else the single model of --model_name and
    --model_base_path (``BuildSingleModelConfig``)."""
    if not flags.model_base_path and not flags.model_config_file:
        raise TfsError(
            Code.INVALID_ARGUMENT,
            "Both server_options.model_base_path and server_options.model_config_file are empty!",
        )
    if flags.model_config_file:
        return read_config_file(config_file, flags.model_config_file)
    config = pb.ModelServerConfig()
    config.model_config_list.config.add(
        name=flags.model_name, base_path=flags.model_base_path, model_platform="tensorflow"
    )
    return config


def core_options(flags: Flags) -> CoreOptions:
    def load_error(model: str, version: int) -> TfsError | None:
        if not flags.load_fails(model, version):
            return None
        return TfsError(
            Code.UNKNOWN, f"tfs-sim: load of {model} version {version} fails (--sim_load_fail_for)"
        )

    return CoreOptions(
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
        timing=LoadTiming(
            max_load_retries=max(flags.max_num_load_retries, 0),
            retry_interval=max(flags.load_retry_interval_micros, 0) / 1e6,
            load_threads=max(flags.num_load_threads, 0),
        ),
        path_map=PathMap.parse(list(flags.sim_path_map)),
        load_seconds=flags.load_seconds,
        load_error=load_error,
        file_system_poll_wait_seconds=flags.file_system_poll_wait_seconds,
    )


def failed_to_start(error: TfsError) -> int:
    """main.cc: ``std::cout << "Failed to start server. Error: " << status``; ``return -1``."""
    print(f"Failed to start server. Error: {error}", flush=True)
    log_event(log, "failed_to_start", logging.ERROR, code=error.code.name, message=error.message)
    return 255


def _loop(name: str, stop: threading.Event, period: float, body: Callable[[], None]) -> None:
    def run() -> None:
        while not stop.wait(period):
            try:
                body()
            except Exception:  # a loop must survive one bad round, as TFS's pollers do
                log.exception("%s failed", name)

    threading.Thread(target=run, name=name, daemon=True).start()


def _poll_config_file(core: ServerCore, path: str, shown_as: str) -> None:
    """``Server::PollFilesystemAndReloadConfig``: errors are logged, the config stays."""
    try:
        config = read_config_file(path, shown_as)
    except TfsError as e:
        log_event(
            log,
            "config_file_not_applied",
            logging.ERROR,
            file=path,
            code=e.code.name,
            message=f"Failed to read ModelServerConfig file: {e.message}",
        )
        return
    try:
        core.reload(config)
    except TfsError as e:
        log_event(
            log,
            "config_file_not_applied",
            logging.ERROR,
            file=path,
            code=e.code.name,
            message=f"PollFilesystemAndReloadConfig failed to ReloadConfig: {e.message}",
        )


def run(flags: Flags, stop: threading.Event, signals: list[int] | None = None) -> int:
    """Run the server until ``stop`` is set; the process exit code.

    ``signals`` collects the signals that set ``stop`` (logged here, not in the handler).
    """
    for extra in flags.ignored:
        log_event(log, "flag_ignored", logging.WARNING, flag=extra)
    if flags.model_config_file and flags.model_base_path:
        log_event(
            log,
            "flag_ignored",
            logging.WARNING,
            flag="--model_base_path",
            reason="--model_config_file is set",
        )
    try:
        options = core_options(flags)
    except ValueError as e:
        log_event(log, "bad_flag", logging.ERROR, message=str(e))
        return 2
    events = EventLog(Path(flags.sim_event_log) if flags.sim_event_log else None)
    core = ServerCore(options, events=events)
    set_method_name_check(flags.enable_signature_method_name_check)
    # --sim_path_map applies to the config file too, so a container command line works as is.
    config_file = (
        str(options.path_map.to_host(flags.model_config_file)) if flags.model_config_file else ""
    )

    def cancel_waits_on_stop() -> None:
        stop.wait()
        core.stop()

    threading.Thread(target=cancel_waits_on_stop, name="stop", daemon=True).start()
    _loop("clock", stop, CLOCK_TICK_SECONDS, core.step)
    try:
        core.reload(first_config(flags, config_file))
    except TfsError as e:
        if stop.is_set():
            return 0
        return failed_to_start(e)
    except Fatal as e:
        log.critical("%s", e)
        logging.shutdown()
        os.abort()
    try:
        grpc_server, grpc_port = start_grpc_server(core, flags.port)
    except (OSError, RuntimeError):  # grpcio raises RuntimeError for a port it cannot bind
        return failed_to_start(
            TfsError(Code.INVALID_ARGUMENT, "Failed to BuildAndStart gRPC server")
        )
    log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", grpc_port)
    rest_server = None
    if flags.rest_api_port != 0 and flags.rest_api_port == flags.port:
        log.error(
            "server_options.http_port cannot be same as grpc_port. Please use a different "
            "port for HTTP/REST API. Skipped exporting HTTP/REST API."
        )
    elif flags.rest_api_port != 0:
        try:
            rest_server = RestServer(("0.0.0.0", flags.rest_api_port), core)
        except OSError as e:
            # TFS logs this and serves gRPC only. The simulator ends instead (a deliberate
            # difference): SimulatorProcess retries on new ports when the process exits with
            # "Address already in use" in its log, and a test cannot use a simulator without
            # its REST port.
            log.error("Failed to start HTTP Server at localhost:%d: %s", flags.rest_api_port, e)
            grpc_server.stop(grace=0).wait()
            return failed_to_start(
                TfsError(Code.UNAVAILABLE, f"REST port {flags.rest_api_port}: {e.strerror}")
            )
        else:
            threading.Thread(
                target=rest_server.serve_forever, args=(0.1,), name="rest", daemon=True
            ).start()
            log.info("Exporting HTTP/REST API at:localhost:%d ...", rest_server.server_address[1])
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        _loop(
            "config_file_poll",
            stop,
            flags.model_config_file_poll_wait_seconds,
            lambda: _poll_config_file(core, config_file, flags.model_config_file),
        )
    stop.wait()
    for signum in signals or []:
        log_event(log, "signal", name=signal.Signals(signum).name)
    log_event(log, "shutting_down")
    if rest_server is not None:
        rest_server.shutdown()
        rest_server.server_close()
    grpc_server.stop(grace=0.2).wait()
    events.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tfs-sim`` and ``python -m reconciler.testing.tfs_sim``."""
    logs.configure()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` dumps every thread's stack
    flags = parse_flags(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()

    received: list[int] = []

    def on_signal(signum: signal.Signals) -> None:
        if not stop.is_set():
            received.append(signum)
        stop.set()

    with SignalThread({signal.SIGTERM: on_signal, signal.SIGINT: on_signal}):
        return run(flags, stop, received)
