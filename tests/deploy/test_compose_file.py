"""deploy/compose.yaml, checked by a real Compose implementation.

``docker compose config`` (the v2 plugin) is used when present, else
``docker-compose config`` (Debian bookworm's docker-compose 1.29 package).
Either one validates the file against the Compose schema, interpolates the
variables and prints the resolved model, which the tests then read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
TFS_FLAGS = [
    "--model_config_file=/models/models.config",
    "--model_config_file_poll_wait_seconds=60",
    "--allow_version_labels_for_unavailable_models=true",
]


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    message = "no Compose implementation: apt-get install docker-compose"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TFS_", "COMPOSE_"))}
    return subprocess.run(
        [*compose_command(), "--file", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**clean, **env},
    )


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The file as the Compose tool resolves it, with real folders for the variables."""
    tmp_path = tmp_path_factory.mktemp("compose")
    models, desired = tmp_path / "models", tmp_path / "desired"
    models.mkdir()
    desired.mkdir()
    result = compose_config(tmp_path, TFS_MODELS_DIR=str(models), TFS_DESIRED_REPO=str(desired))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    config["_paths"] = {"models": str(models), "desired": str(desired)}
    return config


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container target -> (source, mode), whichever syntax the tool printed."""
    found = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target, *rest = volume.split(":")
            found[target] = (source, rest[0] if rest else "rw")
        else:
            mode = "ro" if volume.get("read_only") else "rw"
            found[volume["target"]] = (volume["source"], mode)
    return found


def published(service: dict[str, Any]) -> set[str]:
    ports = set()
    for port in service["ports"]:
        if isinstance(port, str):
            ports.add(port.removesuffix("/tcp").rsplit(":", 1)[0].rsplit(":", 1)[-1])
        else:
            ports.add(str(port["published"]))
    return ports


def test_tfs_runs_as_in_the_lab(resolved: dict[str, Any]) -> None:
    tfs = resolved["services"]["tfs"]
    assert tfs["image"] == "tensorflow/serving"
    assert tfs["command"] == TFS_FLAGS
    assert mounts(tfs)["/models"] == (resolved["_paths"]["models"], "rw")
    assert published(tfs) == {"8500", "8501"}


def test_the_reconciler_shares_the_models_folder_and_reaches_tfs_by_name(
    resolved: dict[str, Any],
) -> None:
    reconciler = resolved["services"]["reconciler"]
    env = reconciler["environment"]
    assert mounts(reconciler)["/models"] == (resolved["_paths"]["models"], "rw")
    assert mounts(reconciler)["/desired"] == (resolved["_paths"]["desired"], "ro")
    assert env["TFS_RECONCILER_REST_URL"] == "http://tfs:8501"
    assert env["TFS_RECONCILER_GRPC_TARGET"] == "tfs:8500"
    assert env["TFS_RECONCILER_CONFIG"] == "/models/models.config"
    assert env["TFS_RECONCILER_DESIRED"].startswith("/desired/")


def test_the_reconciler_image_is_built_from_the_repository(resolved: dict[str, Any]) -> None:
    build = resolved["services"]["reconciler"]["build"]
    assert Path(build["context"]) == REPO
    assert (REPO / build["dockerfile"]).is_file()


def test_the_state_folder_survives_restarts_in_a_volume(resolved: dict[str, Any]) -> None:
    reconciler = resolved["services"]["reconciler"]
    state_dir = reconciler["environment"]["TFS_RECONCILER_STATE_DIR"]
    source, _ = mounts(reconciler)[state_dir]
    assert source in resolved["volumes"] or source.endswith("reconciler-state")


def test_the_tfs_image_can_be_swapped_for_the_simulator(tmp_path: Path) -> None:
    result = compose_config(
        tmp_path, TFS_MODELS_DIR="/m", TFS_DESIRED_REPO="/d", TFS_IMAGE="tfs-sim:local"
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["tfs"]["image"] == "tfs-sim:local"


def test_the_models_folder_must_be_named(tmp_path: Path) -> None:
    result = compose_config(tmp_path, TFS_DESIRED_REPO=str(tmp_path))
    assert result.returncode != 0
    assert "set TFS_MODELS_DIR" in result.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    ports:\n", "    portz:\n", 1))
    result = subprocess.run(
        [*compose_command(), "--file", str(broken), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "TFS_MODELS_DIR": str(tmp_path), "TFS_DESIRED_REPO": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "portz" in result.stderr
