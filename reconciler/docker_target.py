"""The TFS container, reached through the Docker SDK: find it, read its flags, restart it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from reconciler.errors import TransientError

if TYPE_CHECKING:
    import docker

ALLOW_LABELS_FLAG = "--allow_version_labels_for_unavailable_models"
FILE_SYSTEM_POLL_FLAG = "--file_system_poll_wait_seconds"
TFS_FILE_SYSTEM_POLL = 1.0  # main.cc's default


def _tfs_flag_values(args: list[str], flag: str) -> list[str | None]:
    """The values TFS's flag parser (tensorflow's command_line_flags.cc, ``Flags::Parse``)
    gives `flag` (``--name``), in order: only ``--name=value`` counts, or ``--name`` alone
    (None: a boolean's true); ``-name``, ``--name value`` and anything after a bare ``--`` are
    unknown arguments to TFS, which it passes over (main.cc prints "unknown argument")."""
    found: list[str | None] = []
    for arg in args:
        if arg == "--":
            break
        if arg == flag:
            found.append(None)
        elif arg.startswith(flag + "="):
            found.append(arg[len(flag) + 1 :])
    return found


def _int32(text: str) -> int | None:
    """``absl::SimpleAtoi`` into an int32: surrounding ASCII whitespace and a sign allowed,
    decimal digits only, None on anything else or on overflow."""
    body = text.strip(" \t\n\v\f\r")
    digits = body[1:] if body[:1] in ("-", "+") else body
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(body)
    return value if -(2**31) <= value < 2**31 else None


def file_system_poll_in(args: list[str], default: float = TFS_FILE_SYSTEM_POLL) -> float:
    """The --file_system_poll_wait_seconds a TFS command line sets (the last one wins, as
    with TFS's flag parser, which reads only ``--name=value``: ``--name 5`` leaves TFS at its
    default), else `default`. A value TFS could not parse stops TFS at start, so it is
    ignored here."""
    found = default
    for value in _tfs_flag_values(args, FILE_SYSTEM_POLL_FLAG):
        number = None if value is None else _int32(value)
        if number is not None:
            found = float(number)
    return found


def _sdk() -> ModuleType:
    # Imported on first use: the Docker SDK costs every command 0.4 s of start-up otherwise.
    importlib.import_module("docker.errors")
    return importlib.import_module("docker")


class DockerError(TransientError):
    """The Docker engine or the TFS container cannot be used; the message says why."""


class DockerTarget:
    """A TFS container by name, or by a label selector such as `app=tfs` (exactly one match)."""

    def __init__(self, container: str | None = None, selector: str | None = None) -> None:
        if not container and not selector:
            raise DockerError("name the TFS container (--container NAME or --container-label K=V)")
        self.container = container
        self.selector = selector

    def describe(self) -> str:
        return (
            f"container {self.container}" if self.container else f"container label {self.selector}"
        )

    def _client(self) -> docker.DockerClient:
        sdk = _sdk()
        try:
            client: docker.DockerClient = sdk.from_env(timeout=30)
            client.ping()
        except sdk.errors.DockerException as error:
            raise DockerError(
                f"the Docker engine does not answer (DOCKER_HOST or the default socket): {error}"
            ) from None
        return client

    def _find(self, client: docker.DockerClient) -> Any:
        sdk = _sdk()
        try:
            if self.container:
                return client.containers.get(self.container)
            found = client.containers.list(all=True, filters={"label": self.selector or ""})
        except sdk.errors.NotFound:
            raise DockerError(f"no {self.describe()} on this Docker engine") from None
        except sdk.errors.DockerException as error:
            raise DockerError(f"cannot list containers: {error}") from None
        if len(found) != 1:
            raise DockerError(
                f"{len(found)} containers match label {self.selector}; need exactly 1"
            )
        return found[0]

    def args(self) -> list[str]:
        """The TFS flags the container runs with (its command after the entrypoint)."""
        client = self._client()
        try:
            container = self._find(client)
            return [str(a) for a in container.attrs.get("Args") or []]
        finally:
            client.close()

    def file_system_poll(self, default: float = TFS_FILE_SYSTEM_POLL) -> float:
        """The container's --file_system_poll_wait_seconds, else `default`."""
        return file_system_poll_in(self.args(), default)

    def allows_labels_for_unavailable(self) -> bool:
        """Whether TFS reads --allow_version_labels_for_unavailable_models as true: the last
        occurrence wins; ``true``/``false`` in any case, ``1``/``0``."""
        allowed = False
        for value in _tfs_flag_values(self.args(), ALLOW_LABELS_FLAG):
            if value is None or value.lower() == "true" or value == "1":
                allowed = True
            elif value.lower() == "false" or value == "0":
                allowed = False
        return allowed

    def restart(self, timeout: int = 10) -> None:
        sdk = _sdk()
        client = self._client()
        try:
            container = self._find(client)
            container.restart(timeout=timeout)
        except sdk.errors.DockerException as error:
            raise DockerError(f"restarting {self.describe()} failed: {error}") from None
        finally:
            client.close()
