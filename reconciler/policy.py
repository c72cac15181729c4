"""Version policies: which versions of a model TFS serves, given the folders on disk."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Specific:
    """Exactly these versions (TFS `specific { versions: ... }`)."""

    versions: tuple[int, ...]


@dataclass(frozen=True)
class Latest:
    """The N highest versions on disk (TFS `latest { num_versions: N }`)."""

    num_versions: int = 1


@dataclass(frozen=True)
class AllVersions:
    """Every version on disk (TFS `all {}`)."""


VersionPolicy = Specific | Latest | AllVersions


def served_versions(policy: VersionPolicy, on_disk: Iterable[int]) -> tuple[int, ...]:
    """The versions TFS serves under `policy` when `on_disk` are the version folders."""
    if isinstance(policy, Specific):
        return tuple(sorted(set(policy.versions)))
    found = sorted(set(on_disk))
    if isinstance(policy, Latest):
        return tuple(found[-policy.num_versions :]) if policy.num_versions > 0 else ()
    return tuple(found)


def describe(policy: VersionPolicy) -> str:
    """A short human description, as the desired-state YAML spells it."""
    if isinstance(policy, Specific):
        return "[" + ", ".join(str(v) for v in sorted(policy.versions)) + "]"
    if isinstance(policy, Latest):
        return f"{{latest: {policy.num_versions}}}"
    return "all"
