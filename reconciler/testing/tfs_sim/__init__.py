"""A TensorFlow Serving simulator: the TFS behaviours tfs-reconciler relies on, without TFS.

Run it as ``tfs-sim`` or ``python -m reconciler.testing.tfs_sim`` with tensorflow_model_server's
flags (see ``--help``). Modules:

- :mod:`.flags`: the command line; :mod:`.server`: the process (loops, ports, signals);
- :mod:`.core`: ServerCore (config reloads, labels, queries; thread-safe);
- :mod:`.lifecycle`: the version state machine of one model (pure, clock-driven);
- :mod:`.model_config`: models.config parsing and validation; :mod:`.disk`: version folders;
- :mod:`.savedmodel`: loadability and signatures of a SavedModel; :mod:`.predict`: answers;
- :mod:`.rest`, :mod:`.grpc_service`: the two APIs; :mod:`.errors`, :mod:`.logs`.
"""

from reconciler.testing.tfs_sim.server import main

__all__ = ["main"]
