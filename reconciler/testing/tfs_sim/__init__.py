"""A TensorFlow Serving simulator: the TFS behaviours tfs-reconciler relies on, without TFS.

Run it as ``tfs-sim`` or ``python -m reconciler.testing.tfs_sim`` with tensorflow_model_server's
flags; ``--help`` lists them with their defaults. The lab's command line works as it is, plus
a path map when the config names container paths and the simulator runs on the host::

    tfs-sim --port=8500 --rest_api_port=8501 \\
      --model_config_file=examples/models/models.config \\
      --model_config_file_poll_wait_seconds=60 \\
      --allow_version_labels_for_unavailable_models=true \\
      --sim_path_map=/models=$PWD/examples/models

TFS flags: ``--port`` (gRPC, 8500), ``--rest_api_port`` (8501; 0 disables REST),
``--model_config_file``, ``--model_config_file_poll_wait_seconds`` (0: read once),
``--file_system_poll_wait_seconds`` (1; 0: once at start; negative: never),
``--allow_version_labels_for_unavailable_models`` (``--flag``, ``=true``/``=false``),
``--model_name``/``--model_base_path`` (single-model mode, ignored with a config file),
``--max_num_load_retries`` (5), ``--load_retry_interval_micros`` (60 s), ``--num_load_threads``
(0: loads one at a time). Any other ``--flag`` is accepted and ignored with a ``flag_ignored``
warning (TFS prints ``unknown argument`` and goes on). The poll flags also take fractions of a
second (TFS: whole seconds). Simulator-only: ``--sim_load_seconds`` (every load, 0),
``--sim_load_seconds_for=MODEL[:VERSION]=SECONDS`` (repeatable; a version rule beats a model
rule; ``inf`` makes the load hang, as a TFS load can), ``--sim_load_fail_for=MODEL[:VERSION]``
(repeatable: the load fails after its time and retries), ``--sim_path_map=FROM=TO``
(repeatable), ``--sim_event_log=FILE`` (version states, labels and reloads as JSON lines; also
served at ``GET /sim/events?since=N``, see :mod:`.events`). ``kill -USR1`` dumps the threads'
stacks.

Logs go to stderr, one event per line (``event key=value ...``); tests may rely on these
events: ``version_state`` (model, version, state, error), ``config_applied``,
``config_file_not_applied``, ``reload_request``, ``reload_refused``,
``file_system_poll_failed``, ``predict`` (model, version that answered, via=latest|version:V|
label:L|grpc), ``flag_ignored``, ``signal``, and TFS's lines ``Running gRPC ModelServer at
0.0.0.0:PORT ...``, ``Exporting HTTP/REST API at:localhost:PORT ...`` and (stdout)
``Failed to start server. Error: CODE: message``.

Modules: :mod:`.flags` (command line), :mod:`.server` (the process: start-up, loops, ports,
signals), :mod:`.core` (ServerCore and the file-system source: reloads, labels, polls,
queries; thread-safe), :mod:`.lifecycle` (the manager: version states, load order, the state
monitor; pure, clock-driven), :mod:`.model_config` (models.config parsing and validation),
:mod:`.disk` (version folders, path map), :mod:`.savedmodel` (loadability and signatures),
:mod:`.json_tensor` (REST bodies), :mod:`.predict` (answers), :mod:`.rest`,
:mod:`.grpc_service` (ModelService), :mod:`.prediction_service`, :mod:`.errors`,
:mod:`.logs`. Each module says which TFS sources it follows.

Choices where TFS's source leaves room:

- TFS's manager keeps models in an unordered map; when several models have a version to load
  the simulator takes them in name order.
- A new model whose version never reaches AVAILABLE or END (none on disk, a missing base path
  anywhere, the poll off) holds the reload forever, as TFS (no deadline), and later reloads
  and config polls queue behind it.
- ``custom_model_config`` in the first config aborts the process, as TFS's LOG(FATAL).
- Unlike TFS (which logs ``Failed to start HTTP Server`` and serves gRPC only), a REST port
  that cannot be bound ends the process (exit 255): SimulatorProcess then retries on new
  ports.
- What TensorFlow would do when running a graph is a stand-in (see :mod:`.predict`): an input
  whose shape the signature does not accept is INVALID_ARGUMENT with a simulator text.
- gRPC errors are a non-OK status; ``ReloadConfigResponse.status`` is filled too but, as with
  TFS's C++ server, a response is not sent with a non-OK status.
"""

from reconciler.testing.tfs_sim.server import main

__all__ = ["main"]
