"""How TFS takes a config: a gRPC push, its own poll of models.config, a container restart, or
not at all (only the file is written). The converger is given one; `choose_reloader` picks it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import structlog

from reconciler.docker_target import DockerError, DockerTarget
from reconciler.errors import StepError
from reconciler.state import TfsUnreachable
from reconciler.tfs_config import ServingConfig
from reconciler.tfs_grpc import ReloadAbandoned, ReloadRejected, TfsGrpc

log = structlog.get_logger("reconciler.reload")

# The least any one call is given, so that a step at the deadline fails fast rather than at once.
MIN_STEP_SECONDS = 0.5


class ReloadMode(StrEnum):
    AUTO = "auto"
    GRPC = "grpc"
    POLL = "poll"
    RESTART = "restart"
    NONE = "none"


class ReloadFailed(StepError):
    """A reload could not be attempted (for example a base_path TFS would hang on)."""


# What can go wrong when TFS is asked to take a config.
RELOAD_FAILURES = (ReloadRejected, ReloadAbandoned, ReloadFailed, TfsUnreachable, DockerError)


class Reloader(Protocol):
    """How TFS takes a config."""

    mode: ReloadMode
    waits: bool  # wait for TFS to converge after each config
    phased: bool  # each phase is its own reload (False: only the final config)

    def check(self, target: ServingConfig) -> None:
        """Before anything is written: raise ReloadFailed, DockerError or TfsUnreachable
        when TFS cannot take `target` this way (e.g. the Docker engine or the container is
        missing)."""

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        """Make TFS take `config`, within `timeout` seconds where the reload can wait."""


@dataclass
class GrpcReloader:
    client: TfsGrpc
    deadline: float = 30.0  # a push's deadline when the caller gives none
    mode: ReloadMode = ReloadMode.GRPC
    waits: bool = True
    phased: bool = True
    # Asked while TFS works on a push; a reason to give up on it (set by the converger).
    give_up: Callable[[], str | None] | None = None

    def check(self, target: ServingConfig) -> None:
        return None

    def prepare(self, config: ServingConfig) -> None:
        """The push of `config` built ahead of `reload(config)`."""
        self.client.prepare(config)

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        """Push `config`; `timeout` (what the command has left) bounds the call: a push that
        adds a model returns only once the model loaded, which may take as long as the apply
        may, and no longer."""
        chosen = max(MIN_STEP_SECONDS, self.deadline if timeout is None else timeout)
        if self.give_up is None:
            self.client.reload(config, timeout=chosen)
        else:
            self.client.reload(config, timeout=chosen, give_up=self.give_up)


@dataclass
class _NoPush:
    """A reloader that asks TFS nothing: no check, no call."""

    def check(self, target: ServingConfig) -> None:
        return None

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        return None


@dataclass
class PollReloader(_NoPush):
    """TFS re-reads models.config on its own (--model_config_file_poll_wait_seconds)."""

    mode: ReloadMode = ReloadMode.POLL
    waits: bool = True
    phased: bool = True


@dataclass
class RestartReloader:
    """Restart the TFS container: it reads models.config at start. Drops traffic."""

    target: DockerTarget
    mode: ReloadMode = ReloadMode.RESTART
    waits: bool = True
    phased: bool = False

    def check(self, target: ServingConfig) -> None:
        """Raise DockerError now if the engine or the container cannot be reached, and
        ReloadFailed if TFS would not start with `target` (before it is written)."""
        self.target.args()
        self._refuse_labels_tfs_cannot_start_with(target)

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        self._refuse_labels_tfs_cannot_start_with(config)  # a rollback's config too
        self.target.restart()

    def _refuse_labels_tfs_cannot_start_with(self, config: ServingConfig) -> None:
        if any(m.labels for m in config.models) and not self.target.allows_labels_for_unavailable():
            raise ReloadFailed(
                "not restarting: the config has labels and TFS runs without "
                "--allow_version_labels_for_unavailable_models=true, so it would fail to start"
            )


@dataclass
class NoReload(_NoPush):
    """Only write the file."""

    mode: ReloadMode = ReloadMode.NONE
    waits: bool = False
    phased: bool = False


def choose_reloader(
    mode: ReloadMode,
    *,
    grpc_target: str,
    docker: DockerTarget | None,
    allow_restart: bool,
) -> Reloader:
    """The reloader for `mode`; `auto` takes gRPC when it answers, else polling.

    `auto` restarts the container only with `allow_restart`, since a restart drops traffic.
    """
    if mode is ReloadMode.NONE:
        return NoReload()
    if mode is ReloadMode.POLL:
        return PollReloader()
    if mode is ReloadMode.RESTART:
        if docker is None:
            raise DockerError("--reload restart needs --container NAME or --container-label K=V")
        return RestartReloader(docker)
    client = TfsGrpc(grpc_target)
    if mode is ReloadMode.GRPC or client.answers(timeout=1.0):
        return GrpcReloader(client)
    client.close()
    chosen: Reloader = PollReloader()
    if allow_restart and docker is not None:
        chosen = RestartReloader(docker)
    log.warning("reload_auto", grpc_target=grpc_target, grpc="no answer", using=chosen.mode.value)
    return chosen
