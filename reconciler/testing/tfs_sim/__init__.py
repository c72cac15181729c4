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
``--file_system_poll_wait_seconds`` (1), ``--allow_version_labels_for_unavailable_models``
(``--flag``, ``=true``/``=false``), ``--model_name``/``--model_base_path`` (single-model mode,
ignored with a config file), ``--max_num_load_retries`` (5), ``--load_retry_interval_micros``
(60 s). Any other ``--flag`` is accepted and ignored with a ``flag_ignored`` warning.
Simulator-only: ``--sim_load_seconds`` (every load, 0), ``--sim_load_seconds_for=MODEL[:VERSION]
=SECONDS`` (repeatable; a version rule beats a model rule), ``--sim_path_map=FROM=TO``
(repeatable). ``kill -USR1`` dumps the threads' stacks.

Logs go to stderr, one event per line (``event key=value ...``); tests may rely on these
events: ``version_state`` (model, version, state, error), ``config_applied``,
``config_file_not_applied``, ``reload_request``, ``reload_refused``, ``predict`` (model, version
that answered, via=latest|version:V|label:L), ``flag_ignored``, ``signal``, and TFS's ready
lines ``Running gRPC ModelServer at 0.0.0.0:PORT ...`` and ``Exporting HTTP/REST API
at:localhost:PORT ...``.

Modules: :mod:`.flags` (command line), :mod:`.server` (the process: loops, ports, signals),
:mod:`.core` (ServerCore: reloads, labels, queries; thread-safe), :mod:`.lifecycle` (a model's
version state machine; pure, clock-driven), :mod:`.model_config` (models.config parsing and
validation), :mod:`.disk` (version folders, path map), :mod:`.savedmodel` (loadability and
signatures), :mod:`.predict` (answers), :mod:`.rest`, :mod:`.grpc_service`, :mod:`.errors`,
:mod:`.logs`.

Decisions where the reference leaves room (each is also in the module that implements it):

- The config file is re-applied on *every* poll, as TFS does, not only when it changed;
  re-applying the config in force is a no-op (labels are re-checked: without the allow flag,
  a label whose version went away makes each poll log ``config_file_not_applied``).
- A refused config changes nothing: validation and the label check run before anything is
  applied (so a refused change that also added versions does not load them).
- Labels are checked against the versions AVAILABLE when the reload starts, also at start-up
  (so without the allow flag, labels in the first config stop the server: exit code 1).
- A reload waits until each *new* model has a version AVAILABLE (or a version fails: UNKNOWN
  ``N model(s) did not become available: {NAMES}``); a new model with no version folder
  (missing base_path, or empty) waits forever, holding the reload lock, so later reloads and
  config polls queue. Creating the folder releases it (TFS: unconfirmed).
- Unloading follows TFS's availability-preserving policy; UNLOADING lasts one clock tick.
- A ``specific`` version with no folder is logged (``versions_not_found``) and not listed in
  status. A base_path that disappears leaves the model's versions as they are; an existing but
  empty one unloads them all.
- A failing load stays LOADING for 1 + ``--max_num_load_retries`` attempts, each taking the load
  time, ``--load_retry_interval_micros`` apart, then END with TensorFlow's error (see
  :mod:`.savedmodel` for what counts as missing or corrupt); it is not retried while it stays
  aspired.
- Errors for predict and metadata on an unknown model or version use TFS's servable messages
  (404 ``Servable not found for request: Latest(NAME)`` / ``Specific(NAME, V)``); status uses
  the reference's ``Could not find ...`` messages. A label pointing at a version that does not
  serve answers the same 404.
- gRPC errors are a non-OK status; ``ReloadConfigResponse.status`` is filled too but, as with
  TFS's C++ server, a response is not sent with a non-OK status.
- Predictions without TensorFlow are deterministic stand-ins (see :mod:`.predict`); metadata
  comes from ``saved_model.pb``'s signatures, ``__saved_model_init_op`` included.
"""

from reconciler.testing.tfs_sim.server import main

__all__ = ["main"]
