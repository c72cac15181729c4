"""The fleet on a real engine, under attack (review of issue 12): two containers found by label
that bind-mount one models folder share one models.config, which a fleet rollout cannot keep
per replica; apply --fleet refuses them by name, touching nothing."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.testing import docker_bed
from reconciler.testing.docker_bed import StartTfsContainer

from .test_fleet_docker import ARGS

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


def test_two_containers_sharing_one_models_config_are_refused_by_name(
    tmp_path: Path, start_tfs_container: StartTfsContainer
) -> None:
    label = f"tfs-reconciler.fleet=review-{secrets.token_hex(4)}"
    key, _, value = label.partition("=")
    models = docker_bed.copy_example_models(tmp_path / "models")
    first = start_tfs_container(models, args=ARGS, labels={key: value}, wait_for_model="animals")
    second = start_tfs_container(models, args=ARGS, labels={key: value}, wait_for_model="animals")
    shutil.copytree(REPO / "desired_state", tmp_path / "desired_state")
    (tmp_path / "fleet.yaml").write_text(
        f"apiVersion: tfs-reconciler/v1\nfleet:\n  discover:\n    docker: {{label: {label}}}\n"
    )
    before = (models / "models.config").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    result = subprocess.run(
        [
            "tfs-reconciler", "apply", "--fleet", str(tmp_path / "fleet.yaml"),
            "--desired", str(tmp_path / "desired_state"), "--models-dir", str(models),
            "--state-dir", str(tmp_path / "state"), "--reload", "grpc",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout + result.stderr
    names = sorted([first.name, second.name])
    assert f"replicas {names[0]} and {names[1]} have one models.config" in result.stderr
    assert "another tfs-reconciler" not in result.stderr
    assert (models / "models.config").read_text() == before
