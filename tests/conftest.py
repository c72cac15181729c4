"""Fixtures shared by every test folder: keep them generic (real resources, no test logic)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAB_MODELS = REPO / "examples" / "models"
LAB_DESIRED = REPO / "desired_state"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    """A private copy of the lab: `models/` (animals 1, 2, 3 and the hand-written
    models.config) and `desired_state/` (animals.yaml), in a temporary folder."""
    root = tmp_path / "lab"
    shutil.copytree(LAB_MODELS, root / "models")
    shutil.copytree(LAB_DESIRED, root / "desired_state")
    yield root
