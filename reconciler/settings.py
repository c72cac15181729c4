"""Where things are and how to reach TFS: the options every command shares."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.config_file import default_state_dir


@dataclass(frozen=True)
class Settings:
    desired: Path = Path("desired_state")
    models_dir: Path = Path("models")
    config: Path | None = None  # default: <models_dir>/models.config
    serving_root: str = "/models"
    rest_url: str = "http://localhost:8501"
    grpc_target: str = "localhost:8500"
    state_dir: Path | None = None  # default: .tfs-reconciler/ beside the config
    timeout: float = 120.0
    request_timeout: float = 2.0
    file_system_poll: float = 1.0  # TFS's --file_system_poll_wait_seconds (TFS's default)

    @property
    def config_path(self) -> Path:
        return self.config if self.config is not None else self.models_dir / "models.config"

    @property
    def real_config_path(self) -> str:
        """The file models.config really is (a symlink resolved): what the status document
        names, and what tells two settings for the same file apart from two files."""
        return os.path.realpath(self.config_path)

    @property
    def state_path(self) -> Path:
        return self.state_dir if self.state_dir is not None else default_state_dir(self.config_path)


ENV_PREFIX = "TFS_RECONCILER_"
ENV_FILE_VARIABLE = "TFS_RECONCILER_ENV_FILE"
# The files the systemd unit reads (EnvironmentFile=), in its order: a later one wins.
DEFAULT_ENV_FILES = ("/etc/default/tfs-reconciler", "/etc/tfs-reconciler/env")


def read_env_file(path: str) -> dict[str, str]:
    """The TFS_RECONCILER_* settings of a systemd-style environment file."""
    found = {}
    for raw in Path(path).read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip().strip("'\"")
        if key.startswith(ENV_PREFIX):
            found[key] = value
    return found


@dataclass(frozen=True)
class SettingsEnvironment:
    """The TFS_RECONCILER_* variables every command reads its defaults from: the service's
    env files, overridden by the process's environment (and both by the command line)."""

    variables: dict[str, str]
    files: tuple[str, ...] = ()  # the env files read
    from_files: tuple[str, ...] = ()  # the variables whose value is a file's
    unreadable: tuple[str, ...] = ()  # env files there but not readable: why, per file


def settings_environment(
    environ: Mapping[str, str] | None = None, defaults: Sequence[str] = DEFAULT_ENV_FILES
) -> SettingsEnvironment:
    """The settings an operator's command shares with the service: the files the unit reads
    (or only $TFS_RECONCILER_ENV_FILE when it is set; set empty, none), then the process's
    own TFS_RECONCILER_* variables over them."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(ENV_FILE_VARIABLE)
    candidates = (chosen,) if chosen is not None else tuple(defaults)
    from_files: dict[str, str] = {}
    files, unreadable = [], []
    for path in candidates:
        if not path or not os.path.exists(path):
            continue
        try:
            from_files.update(read_env_file(path))
        except (OSError, UnicodeDecodeError) as error:
            unreadable.append(f"{path}: {getattr(error, 'strerror', None) or error}")
            continue
        files.append(path)
    own = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
    return SettingsEnvironment(
        {**from_files, **own},
        tuple(files),
        tuple(sorted(k for k in from_files if k not in own)),
        tuple(unreadable),
    )
