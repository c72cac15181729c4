"""The models on disk: mapping config paths to host paths, and finding version folders."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_VERSION_NAME = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PathMap:
    """Prefix rewrites from container paths (e.g. ``/models``) to host paths.

    Applied to every base_path and to ``--model_config_file``.

    Built from ``--sim_path_map=/models=/abs/host/models`` (repeatable). The longest matching
    prefix wins; a path no prefix matches is used as it is.
    """

    prefixes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: list[str]) -> PathMap:
        pairs: list[tuple[str, str]] = []
        for spec in specs:
            source, sep, target = spec.partition("=")
            if not sep or not source or not target:
                raise ValueError(f"--sim_path_map wants FROM=TO, got {spec!r}")
            pairs.append((source.rstrip("/") or "/", target.rstrip("/") or "/"))
        pairs.sort(key=lambda p: len(p[0]), reverse=True)
        return cls(tuple(pairs))

    def to_host(self, path: str) -> Path:
        for source, target in self.prefixes:
            if path == source or path.startswith(source.rstrip("/") + "/"):
                rest = path[len(source) :].lstrip("/")
                return Path(target) / rest if rest else Path(target)
        return Path(path)


def scan_versions(base_path: Path) -> set[int] | None:
    """Version numbers under ``base_path``: sub-folders named by a non-negative integer.

    Returns None when ``base_path`` is not a readable folder. Other names (``.4.tmp``,
    ``latest``, files) are ignored.
    """
    try:
        entries = list(base_path.iterdir())
    except OSError:
        return None
    versions: set[int] = set()
    for entry in entries:
        if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir():
            versions.add(int(entry.name))
    return versions
