"""One TFS of a fleet, as a value: where it answers and, when given, its own models.config and
model folders on this host. The fleet file lists them or discovery finds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Replica:
    name: str
    rest: str  # http://host:port of TFS's REST API
    grpc: str | None = None  # host:port of its gRPC API (ReloadConfig); None: file poll only
    config: Path | None = None  # its models.config, written before each push to it
    models_dir: Path | None = None  # its model folders on this host, for the disk checks
