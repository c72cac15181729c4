"""The models on disk: mapping config paths to host paths, and finding version folders.

Follows ``sources/storage_path/file_system_storage_path_source.cc``
(``PollFileSystemForServable`` and the ``Aspire*Versions`` helpers): the children of a
base_path whose names ``absl::SimpleAtoi`` parses are versions (``0004`` is version 4 and is
loaded from ``0004``; a plain *file* with a numeric name is a version too, whose load fails);
a missing base_path is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.testing.tfs_sim.errors import Code, TfsError

if TYPE_CHECKING:
    from reconciler.testing.tfs_sim.model_config import VersionPolicy

_INT64_MAX = 2**63 - 1
_ASCII_SPACE = " \t\n\v\f\r"


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


def simple_atoi(text: str) -> int | None:
    """``absl::SimpleAtoi`` into an int64: surrounding ASCII whitespace and a sign allowed,
    base 10 digits only, None on anything else or on overflow."""
    body = text.strip(_ASCII_SPACE)
    negative = body[:1] == "-"
    if body[:1] in ("-", "+"):
        body = body[1:]
    if not body or not all("0" <= c <= "9" for c in body):
        return None
    value = -int(body) if negative else int(body)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


@dataclass(frozen=True)
class VersionDir:
    """Where one version is loaded from: ``child`` of the base path (as TFS joins them)."""

    version: int
    config_path: str  # io::JoinPath(base_path, child): what TFS's messages name
    host_path: Path


def join_path(base: str, child: str) -> str:
    """``tensorflow::io::JoinPath`` of two parts."""
    if not base:
        return child
    return base.rstrip("/") + "/" + child.lstrip("/")


def list_children(host_base: Path) -> list[str]:
    """``Env::GetChildren``: names in directory order (no sorting, as readdir returns them)."""
    return os.listdir(host_base)


def _bytes(name: str) -> bytes:
    """A name as the file system holds it: ``std::string`` compares these bytes."""
    return os.fsencode(name)


def base_path_missing(config_base: str, name: str) -> TfsError:
    """``PollFileSystemForServable``'s error for a base path that does not exist."""
    return TfsError(
        Code.INVALID_ARGUMENT,
        f"Could not find base path {config_base} for servable {name} with error "
        f"NOT_FOUND: {config_base}; No such file or directory",
    )


def poll_servable(
    name: str, config_base: str, host_base: Path, policy: VersionPolicy
) -> dict[int, VersionDir]:
    """``PollFileSystemForServable``: the versions one model aspires to now.

    Raises TfsError when the base path is missing or unreadable. ``latest`` and ``specific``
    index the children by version (when two names parse to one version, the later in sorted
    order wins, as ``IndexChildrenByVersion`` over the ``std::set`` of children: ``4`` over
    ``04``); ``all`` takes every child that parses (the first of two names for one version,
    in the same order, is the one the manager keeps). ``specific`` first tries
    ``base/<N>`` for every listed version (``AspireSpecificVersionsFastPath``).
    """
    if not host_base.exists():
        raise base_path_missing(config_base, name)

    def entry(version: int, child: str) -> VersionDir:
        return VersionDir(version, join_path(config_base, child), host_base / child)

    if policy.kind == "specific":
        if not policy.versions:
            return {}
        if all((host_base / str(v)).exists() for v in policy.versions):
            return {v: entry(v, str(v)) for v in policy.versions}
    try:
        children = list_children(host_base)
    except OSError as e:
        raise TfsError(Code.NOT_FOUND, f"{config_base}; {e.strerror or e}") from e
    # GetChildren of a cloud path lists descendants; TFS keeps the first path component, in a
    # std::set: from here on the children come in sorted (byte) order, not directory order.
    children = sorted({c.split("/", 1)[0] for c in children}, key=_bytes)
    if policy.kind == "all":
        found: dict[int, VersionDir] = {}
        for child in children:
            version = simple_atoi(child)
            if version is not None and version not in found:
                found[version] = entry(version, child)
        return found
    by_version: dict[int, str] = {}
    for child in children:
        version = simple_atoi(child)
        if version is not None:
            by_version[version] = child
    if policy.kind == "specific":
        return {v: entry(v, c) for v, c in by_version.items() if v in policy.versions}
    newest = sorted(by_version, reverse=True)[: max(policy.num_versions, 1)]
    return {v: entry(v, by_version[v]) for v in newest}
