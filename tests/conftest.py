"""Fixtures shared by every test folder: keep them generic (real resources, no test logic)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB_MODELS = REPO / "examples" / "models"
LAB_DESIRED = REPO / "desired_state"

# The console scripts (tfs-reconciler, tfs-sim) sit beside the interpreter running the tests:
# put them on PATH, as an activated venv would, so `python -m pytest` finds them too.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    """A private, writable copy of the lab: `models/` (animals 1, 2, 3 and the hand-written
    models.config) and `desired_state/` (animals.yaml), in a temporary folder."""
    root = tmp_path / "lab"
    shutil.copytree(LAB_MODELS, root / "models")
    shutil.copytree(LAB_DESIRED, root / "desired_state")
    for path in [root, *root.rglob("*")]:  # the checkout's lab files may be read-only
        path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    yield root
