"""deploy/compose.yaml, checked by a real Compose implementation.

``docker compose config`` (the v2 plugin) is used when present, else
``docker-compose config`` (Debian bookworm's docker-compose 1.29 package).
Either one validates the file against the Compose schema, interpolates the
variables and prints the resolved model, which the tests then read. The tests
marked ``docker`` run ``ps``, ``logs``, ``down`` and ``up`` against a real engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler.testing import docker_bed

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


def compose(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the Compose tool on deploy/compose.yaml with only ``env`` among its variables."""
    own = ("TFS_", "COMPOSE_", "RECONCILER_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return subprocess.run(
        [*compose_command(), "--file", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**clean, **env},
    )


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return compose(tmp_path, "config", **env)


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


def published(service: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """Container port -> (host address, host port), whichever syntax the tool printed.

    An empty host address means every interface, as Docker reads it.
    """
    ports = {}
    for port in service["ports"]:
        if isinstance(port, str):
            host, _, target = port.removesuffix("/tcp").rpartition(":")
            address, _, host_port = host.rpartition(":")
            ports[int(target)] = (address, host_port)
        else:
            ports[int(port["target"])] = (port.get("host_ip", ""), str(port["published"]))
    return ports


def test_tfs_runs_as_in_the_lab(resolved: dict[str, Any]) -> None:
    tfs = resolved["services"]["tfs"]
    assert tfs["image"] == "tensorflow/serving"
    assert tfs["command"] == TFS_FLAGS
    assert mounts(tfs)["/models"] == (resolved["_paths"]["models"], "rw")
    assert set(published(tfs)) == {8500, 8501}


def test_every_port_is_published_on_loopback_only_by_default(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert published(services["tfs"]) == {
        8500: ("127.0.0.1", "8500"),
        8501: ("127.0.0.1", "8501"),
    }
    assert published(services["reconciler"]) == {9109: ("127.0.0.1", "9109")}


def test_host_ports_and_address_come_from_variables(tmp_path: Path) -> None:
    result = compose_config(
        tmp_path,
        TFS_GRPC_PORT="8510",
        TFS_REST_PORT="8511",
        RECONCILER_METRICS_PORT="9119",
        TFS_HOST_ADDRESS="0.0.0.0",
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert published(services["tfs"]) == {8500: ("0.0.0.0", "8510"), 8501: ("0.0.0.0", "8511")}
    assert published(services["reconciler"]) == {9109: ("127.0.0.1", "9119")}


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


def test_the_file_resolves_without_any_variable(tmp_path: Path) -> None:
    """`ps`, `logs` and `down` interpolate the whole file: none may need the path variables."""
    result = compose_config(tmp_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert mounts(services["tfs"])["/models"] == ("/srv/tfs/models", "rw")
    assert mounts(services["reconciler"])["/desired"] == ("/srv/tfs/desired", "ro")


@pytest.fixture
def engine() -> docker.DockerClient:
    try:
        return docker_bed.ensure_engine()
    except docker_bed.EngineUnavailableError as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI and no Docker engine: {error}")
        pytest.skip(f"no Docker engine: {error}")


@pytest.mark.docker
@pytest.mark.usefixtures("engine")
def test_ps_logs_and_down_need_no_variables(tmp_path: Path) -> None:
    project = f"tfs-compose-test-{os.getpid()}"
    for command in ("ps", "logs", "down"):
        result = compose(tmp_path, "--project-name", project, command)
        assert result.returncode == 0, (command, result.stderr)


@pytest.mark.docker
def test_up_refuses_a_missing_models_folder_rather_than_mount_an_empty_one(
    tmp_path: Path, engine: docker.DockerClient
) -> None:
    project = f"tfs-compose-test-{os.getpid()}"
    missing = tmp_path / "no-such-models"
    image = docker_bed.ensure_base_image(engine).tags[0]  # any local image: nothing runs
    env = {"TFS_MODELS_DIR": str(missing), "TFS_DESIRED_REPO": str(tmp_path), "TFS_IMAGE": image}
    try:
        result = compose(tmp_path, "--project-name", project, "up", "--no-start", "tfs", **env)
        assert result.returncode != 0
        assert str(missing) in result.stderr
        assert not missing.exists()
    finally:
        compose(tmp_path, "--project-name", project, "down", **env)


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
