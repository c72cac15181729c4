"""Where things are and how to reach TFS: the options every command shares."""

from __future__ import annotations

import os
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
