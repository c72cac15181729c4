"""The TFS container, reached through the Docker SDK: find it, read its flags, restart it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from reconciler.errors import TransientError
from reconciler.tfs_flags import (
    ALLOW_LABELS_FLAG,
    FILE_SYSTEM_POLL_FLAG,
    TFS_FILE_SYSTEM_POLL,
    allows_labels_for_unavailable,
    file_system_poll_in,
    tfs_args,
)

if TYPE_CHECKING:
    import docker

__all__ = [
    "ALLOW_LABELS_FLAG",
    "FILE_SYSTEM_POLL_FLAG",
    "TFS_FILE_SYSTEM_POLL",
    "DockerError",
    "DockerTarget",
    "file_system_poll_in",
    "tfs_args",
]


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
        """The TFS flags the container runs with (see `tfs_args`)."""
        client = self._client()
        try:
            config = self._find(client).attrs.get("Config") or {}
            return tfs_args(config.get("Entrypoint"), config.get("Cmd"))
        finally:
            client.close()

    def file_system_poll(self, default: float = TFS_FILE_SYSTEM_POLL) -> float:
        """The container's --file_system_poll_wait_seconds, else `default`."""
        return file_system_poll_in(self.args(), default)

    def allows_labels_for_unavailable(self) -> bool:
        """Whether TFS reads --allow_version_labels_for_unavailable_models as true."""
        return allows_labels_for_unavailable(self.args())

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
