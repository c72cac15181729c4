"""Finding a fleet's replicas instead of listing them: Docker containers by label, or DNS.

Docker (``discover: {docker: {label: tfs-reconciler.fleet=prod}}``): every running (or
paused) container carrying the label is one replica, named after the container, ordered by
name. Everything else is read from the engine's inspect data (:func:`replica_of`, pure):

- ``rest``/``grpc``: the host ports the container publishes for its REST and gRPC ports
  (8501/8500, or its ``--rest_api_port``/``--port``), on the host address it publishes them
  on (an unspecified one, ``0.0.0.0``/``::``, is reached on loopback);
- ``config``: its ``--model_config_file``, mapped back to a host path through its bind
  mounts; ``models_dir``: the host folder bind-mounted at ``/models`` (TFS's convention).

A container that cannot be used (REST not published; neither gRPC published nor its
models.config on a bind mount, so nothing could change what it serves; not running) is left
out with a reason (:func:`discover_docker_with_skipped`), never guessed at.

DNS (:func:`discover_dns`): an SRV name (``_service._proto.name``, RFC 2782) gives one replica
per target and port (the REST port; gRPC on ``grpc_port`` of the same host); any other name
gives one replica per A/AAAA address, on ``rest_port``/``grpc_port``. The resolver is
injected (:class:`Resolver`); :class:`SystemResolver` asks the system's resolver for
addresses and dnspython, when installed, for SRV records.

An engine or resolver that does not answer is :class:`DiscoveryError`, a TransientError: the
pass is retried, and nothing is concluded from an empty answer that was not given.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.errors import TransientError
from reconciler.replica import Replica
from reconciler.tfs_flags import flag_values, int32, tfs_args

if TYPE_CHECKING:
    import docker

CONTAINER_REST_PORT = 8501  # tensorflow_model_server's --rest_api_port in the image's docs
CONTAINER_GRPC_PORT = 8500  # its --port
CONTAINER_MODELS_DIR = "/models"
USABLE_STATES = ("running", "paused", "restarting")  # members, answering or not


class DiscoveryError(TransientError):
    """The Docker engine or the DNS resolver did not answer; the message says which."""


class UnusableContainer(ValueError):
    """A container carries the fleet label but cannot be a replica; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"container {name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class SkippedContainer:
    """A labelled container left out of the fleet, and why."""

    name: str
    reason: str


# --- Docker ------------------------------------------------------------------------------


def replica_of(attrs: Mapping[str, Any], models_dir: str = CONTAINER_MODELS_DIR) -> Replica:
    """The replica a container is, from its inspect data (``docker inspect``'s object);
    raises :class:`UnusableContainer` when it cannot be one."""
    name = str(attrs.get("Name") or attrs.get("Id", "?")[:12]).lstrip("/")
    status = str((attrs.get("State") or {}).get("Status") or "unknown")
    if status not in USABLE_STATES:
        raise UnusableContainer(name, f"it is {status}")
    command = attrs.get("Config") or {}
    args = tfs_args(command.get("Entrypoint"), command.get("Cmd"))
    ports: Mapping[str, Any] = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    mounts = [m for m in attrs.get("Mounts") or [] if m.get("Type") == "bind"]
    rest_port = _int_flag(args, "--rest_api_port", CONTAINER_REST_PORT)
    grpc_port = _int_flag(args, "--port", CONTAINER_GRPC_PORT)
    rest = _published(ports, rest_port)
    if rest is None:
        raise UnusableContainer(name, f"its REST port {rest_port}/tcp is not published")
    grpc = _published(ports, grpc_port)
    config_flag = _flag(args, "--model_config_file")
    config = _host_path(mounts, config_flag) if config_flag else None
    if grpc is None and config is None:
        raise UnusableContainer(
            name,
            f"its gRPC port {grpc_port}/tcp is not published and its models.config is not on "
            "a bind mount: nothing could change what it serves",
        )
    return Replica(
        name=name,
        rest=f"http://{rest}",
        grpc=grpc,
        config=config,
        models_dir=_host_path(mounts, models_dir),
    )


def discover_docker_with_skipped(
    client: docker.DockerClient, label: str, models_dir: str = CONTAINER_MODELS_DIR
) -> tuple[tuple[Replica, ...], tuple[SkippedContainer, ...]]:
    """The replicas the containers carrying ``label`` (``key=value`` or ``key``) are, by
    name, and the labelled containers left out, with the reason."""
    errors = _docker_errors()
    try:
        containers = client.containers.list(filters={"label": label}, ignore_removed=True)
        inspected = [c.attrs for c in containers]
    except errors.DockerException as error:
        raise DiscoveryError(
            f"cannot list the containers labelled {label} on the Docker engine: {error}"
        ) from None
    replicas: list[Replica] = []
    skipped: list[SkippedContainer] = []
    for attrs in inspected:
        try:
            replicas.append(replica_of(attrs, models_dir))
        except UnusableContainer as unusable:
            skipped.append(SkippedContainer(unusable.name, unusable.reason))
    return (
        tuple(sorted(replicas, key=lambda r: r.name)),
        tuple(sorted(skipped, key=lambda s: s.name)),
    )


def discover_docker(
    client: docker.DockerClient, label: str, models_dir: str = CONTAINER_MODELS_DIR
) -> tuple[Replica, ...]:
    """The replicas the containers carrying ``label`` are, by name (unusable ones left out:
    :func:`discover_docker_with_skipped` says which and why)."""
    return discover_docker_with_skipped(client, label, models_dir)[0]


def _docker_errors() -> Any:
    # Imported on first use, as docker_target does: the SDK costs 0.4 s of start-up.
    return importlib.import_module("docker.errors")


def _flag(args: list[str], name: str) -> str | None:
    """The value TFS reads for ``--name``: the last ``--name=value``."""
    values = [value for value in flag_values(args, name) if value is not None]
    return values[-1] if values else None


def _int_flag(args: list[str], name: str, default: int) -> int:
    value = _flag(args, name)
    number = int32(value) if value is not None else None
    return default if number is None else number  # TFS would not start with a bad value


def _published(ports: Mapping[str, Any], container_port: int) -> str | None:
    """``host:port`` where the engine publishes ``container_port``/tcp, IPv4 first."""
    bindings = [b for b in ports.get(f"{container_port}/tcp") or [] if b.get("HostPort")]
    if not bindings:
        return None
    bindings.sort(key=lambda b: ":" in str(b.get("HostIp") or ""))
    host = str(bindings[0].get("HostIp") or "0.0.0.0")
    port = int(bindings[0]["HostPort"])
    return _host_port(_reachable(host), port)


def _reachable(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_path(mounts: Sequence[Mapping[str, Any]], inside: str) -> Path | None:
    """The host path of a path in the container, through the deepest bind mount holding it."""
    path = PurePosixPath(inside)
    best: tuple[int, Path] | None = None
    for mount in mounts:
        destination = PurePosixPath(str(mount.get("Destination") or ""))
        if not destination.is_absolute() or not path.is_relative_to(destination):
            continue
        depth = len(destination.parts)
        if best is None or depth > best[0]:
            best = (depth, Path(str(mount["Source"])) / path.relative_to(destination))
    return None if best is None else best[1]


# --- DNS ---------------------------------------------------------------------------------


class Resolver(Protocol):
    """What :func:`discover_dns` asks of DNS. Raise ``OSError`` when the resolver does not
    answer; return an empty list when the name has no such records."""

    def addresses(self, name: str) -> list[str]:
        """The A and AAAA records of ``name``."""
        ...

    def srv(self, name: str) -> list[tuple[str, int]]:
        """The SRV records of ``name``: (target host, port)."""
        ...


class SystemResolver:
    """Addresses from the system's resolver (``getaddrinfo``); SRV records through
    dnspython, which is not a dependency: without it an SRV name is a DiscoveryError."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def addresses(self, name: str) -> list[str]:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            if error.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                return []
            raise
        return sorted({str(info[4][0]) for info in infos})

    def srv(self, name: str) -> list[tuple[str, int]]:
        try:
            resolver: Any = importlib.import_module("dns.resolver")
        except ImportError:
            raise DiscoveryError(
                f"{name} is an SRV name and SRV lookups need dnspython (pip install dnspython)"
            ) from None
        try:
            answer = resolver.resolve(name, "SRV", lifetime=self.timeout)
        except (resolver.NXDOMAIN, resolver.NoAnswer):
            return []
        except Exception as error:  # dnspython's timeouts and server failures
            raise OSError(f"SRV lookup of {name}: {error}") from None
        return sorted((str(r.target).rstrip("."), int(r.port)) for r in answer)


def discover_dns(
    name: str,
    rest_port: int | None = None,
    grpc_port: int | None = None,
    resolver: Resolver | None = None,
) -> tuple[Replica, ...]:
    """The replicas behind a DNS name, by name (see the module doc). Ports not given (the
    fleet file may leave them out) are TFS's defaults, 8501 and 8500."""
    resolver = resolver or SystemResolver()
    rest_port = CONTAINER_REST_PORT if rest_port is None else rest_port
    grpc_port = CONTAINER_GRPC_PORT if grpc_port is None else grpc_port
    is_srv = name.startswith("_")
    try:
        if is_srv:
            targets = resolver.srv(name)
        else:
            targets = [(address, rest_port) for address in resolver.addresses(name)]
    except OSError as error:
        kind = "SRV" if is_srv else "address"
        raise DiscoveryError(f"the {kind} lookup of {name} failed: {error}") from None
    several_ports = len({host for host, _ in targets}) < len(targets)
    replicas = [
        Replica(
            name=_host_port(host, port) if several_ports else host,
            rest=f"http://{_host_port(host, port)}",
            grpc=_host_port(host, grpc_port),
        )
        for host, port in targets
    ]
    return tuple(sorted(replicas, key=_dns_order))


def _dns_order(replica: Replica) -> tuple[int, str]:
    """Addresses in numeric order (10.0.0.9 before 10.0.0.10), names by name."""
    try:
        address = ipaddress.ip_address(replica.name)
    except ValueError:
        return (1, replica.name)
    return (0, f"{address.version}:{int(address):040d}")
