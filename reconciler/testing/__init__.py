"""Test helpers shipped with tfs-reconciler: a TensorFlow Serving simulator, in-memory fakes and
a lab.

- :class:`SimulatorProcess`: runs ``python -m reconciler.testing.tfs_sim`` on free ports for
  the length of a ``with`` block (see :mod:`reconciler.testing.simulator`);
- :mod:`reconciler.testing.tfs_sim`: the simulator itself (``tfs-sim --help``);
- :class:`FakeTfs`, :class:`FakeReloader`, :class:`FakeClock`: TFS, a reloader and time in
  memory, to test a converger without processes or sleeping (:mod:`reconciler.testing.fakes`);
- :class:`LabRepo`, :func:`git`, :func:`wait_until`, :func:`label_version`: a desired state in
  a git repository, and the helpers a test of a running reconciler needs
  (:mod:`reconciler.testing.lab`);
- :class:`ReconcilerProcess`: ``tfs-reconciler ARGS`` as a process, its log read as events.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reconciler.testing.simulator import SimulatorError, SimulatorExited, SimulatorProcess

if TYPE_CHECKING:
    from reconciler.testing.fakes import FakeClock, FakeReloader, FakeTfs
    from reconciler.testing.lab import LabRepo, git, label_version, wait_until
    from reconciler.testing.process import ReconcilerProcess

# Imported when first used: the simulator (python -m reconciler.testing.tfs_sim) imports this
# package, and should not pay for the reconciler's modules the fakes are built on.
_LAZY = {
    **dict.fromkeys(("FakeClock", "FakeReloader", "FakeTfs"), "reconciler.testing.fakes"),
    **dict.fromkeys(("LabRepo", "git", "label_version", "wait_until"), "reconciler.testing.lab"),
    "ReconcilerProcess": "reconciler.testing.process",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FakeClock",
    "FakeReloader",
    "FakeTfs",
    "LabRepo",
    "ReconcilerProcess",
    "SimulatorError",
    "SimulatorExited",
    "SimulatorProcess",
    "git",
    "label_version",
    "wait_until",
]
