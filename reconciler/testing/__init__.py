"""Test helpers shipped with tfs-reconciler: a TensorFlow Serving simulator and its runner.

- :class:`SimulatorProcess`: runs ``python -m reconciler.testing.tfs_sim`` on free ports for
  the length of a ``with`` block (see :mod:`reconciler.testing.simulator`);
- :mod:`reconciler.testing.tfs_sim`: the simulator itself (``tfs-sim --help``).
"""

from reconciler.testing.simulator import SimulatorError, SimulatorExited, SimulatorProcess

__all__ = ["SimulatorError", "SimulatorExited", "SimulatorProcess"]
