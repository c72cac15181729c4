"""TFS's version states are one vocabulary: outside `reconciler.version_state`, the clients
that read TFS's answers, and the simulator (which plays TFS), no module spells them."""

from __future__ import annotations

import re
from pathlib import Path

import reconciler
from reconciler.version_state import VersionState

PACKAGE = Path(reconciler.__file__).parent
EXEMPT = ("version_state.py", "tfs_rest.py", "tfs_grpc.py")  # the vocabulary, the clients


def test_no_module_spells_a_version_state_as_a_string() -> None:
    words = "|".join(s.value for s in VersionState)
    spelled = re.compile(rf"""["']({words})["']""")
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in EXEMPT and "testing" not in path.parts and "proto" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if spelled.search(line)
    ]
    assert found == []


def test_a_state_compares_equal_to_the_word_tfs_sends() -> None:
    assert VersionState.AVAILABLE == "AVAILABLE" and f"{VersionState.END}" == "END"
