"""The options of `tfs-reconciler run` (re-read on SIGHUP)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from reconciler.reload import ReloadMode
from reconciler.settings import Settings


@dataclass(frozen=True)
class DaemonOptions:
    settings: Settings
    reload: ReloadMode = ReloadMode.AUTO
    resync: float = 30.0
    resync_models: int = 100
    self_heal: bool = True
    git: bool = False
    git_branch: str | None = None
    git_remote: str | None = None
    git_interval: float = 60.0
    metrics_addr: str = "127.0.0.1:9109"
    verify: bool = True
    container: str | None = None
    container_label: str | None = None
    allow_restart: bool = False
    debounce: float = 0.05
    retry_base: float = 2.0
    webhook_addr: str | None = None
    webhook_secret_file: str | None = None
    settle: float = 1.0  # seconds a models.config the daemon did not write must read the same
    sidecar: bool = False  # in a Kubernetes pod beside TFS: see reconciler.sidecar


def check_fixed_settings(before: DaemonOptions, after: DaemonOptions) -> None:
    """ValueError when a reload would change what only a restart can: the models.config the
    daemon holds the lock of (and keeps its history beside), and the endpoint it listens on."""

    def fixed(o: DaemonOptions) -> dict[str, str]:
        return {
            "models.config": o.settings.real_config_path,
            "state folder": os.path.realpath(o.settings.state_path),
            "metrics address": o.metrics_addr,
            "webhook address": o.webhook_addr or "off",
        }

    old, new = fixed(before), fixed(after)
    changed = [name for name in old if old[name] != new[name]]
    if changed:
        raise ValueError(f"the {' and '.join(changed)} can only change with a restart")
