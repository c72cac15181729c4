"""A ConfigMap (or Secret, projected) volume as the kubelet lays it out, read one update at a time.

The kubelet's AtomicWriter (kubernetes ``pkg/volume/util/atomic_writer.go``) keeps the files
of a volume in a hidden timestamped folder, ``..data`` links to it, and each key is a link
``key -> ..data/key``. An update writes a new timestamped folder, renames a ``..data_tmp``
link over ``..data``, then removes the old folder. Reading key by key through the per-key
links can mix two updates (one file read before the swap, the next after); reading through
``..data`` once, resolved to one timestamped folder, cannot: a timestamped folder is never
changed once ``..data`` points at it, only removed after the next swap. If ``..data`` moved
while we read, the old folder may have been vanishing under us, so the read starts again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from reconciler.problems import InputError, Location, Problem

DATA_DIR = "..data"
ATTEMPTS = 5

Documents = list[tuple[str, bytes]]


def generation(folder: Path) -> str | None:
    """The timestamped folder ``folder/..data`` names, or None when `folder` is not laid out
    by the kubelet (no ``..data`` link, or one that leads anywhere else than a hidden folder
    beside it)."""
    try:
        target = os.readlink(folder / DATA_DIR)
    except OSError:  # missing, or not a link
        return None
    if "/" in target.rstrip("/") or not target.startswith("..") or target in ("..", "..."):
        return None
    return target.rstrip("/")


def read_generation(folder: Path, read: Callable[[Path], Documents]) -> Documents | None:
    """The documents of one update of the kubelet volume at `folder` (read with `read` from
    its timestamped folder, named as the per-key links name them), or None when `folder` is
    not a kubelet volume."""
    for _ in range(ATTEMPTS):
        current = generation(folder)
        if current is None:
            return None
        root = folder / current
        try:
            documents = read(root)
        except (InputError, OSError) as error:
            if generation(folder) != current:
                continue  # swapped while we read: the old folder is going away
            if isinstance(error, OSError):
                raise
            raise InputError([_renamed(p, root, folder) for p in error.problems]) from None
        if generation(folder) == current:
            return [(_rename(name, root, folder), raw) for name, raw in documents]
    raise InputError(
        [
            Problem(
                Location(str(folder)),
                "",
                f"{folder}/{DATA_DIR} changed {ATTEMPTS} times while it was read; retrying later",
            )
        ]
    )


def _rename(name: str, root: Path, folder: Path) -> str:
    try:
        inside = os.path.relpath(name, root)
    except ValueError:
        return name
    if inside == os.curdir:
        return str(folder)
    return name if inside.startswith(os.pardir) else str(folder / inside)


def _renamed(problem: Problem, root: Path, folder: Path) -> Problem:
    where = replace(problem.location, file=_rename(problem.location.file, root, folder))
    return replace(problem, location=where)
