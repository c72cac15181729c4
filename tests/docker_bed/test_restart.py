"""`apply --reload restart`: the TFS container (tfs-sim:local) restarted through the Docker SDK.

A restart drops traffic: the promotion test reports how many label predicts failed (printed,
run with -s to see it), and asserts only that the apply converged.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import docker
import pytest

from reconciler.testing import SimulatorProcess
from reconciler.testing.docker_bed import StartTfsContainer
from reconciler.testing.lab import label_version
from reconciler.testing.traffic import PredictStream

pytestmark = pytest.mark.docker

MODEL = "animals"

REPO = Path(__file__).resolve().parents[2]
DOG_EXAMPLE = REPO / "examples" / "dog_example.json"
LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


def write_desired(lab: Path, labels: dict[str, int]) -> None:
    lines = "\n".join(f"      {k}: {v}" for k, v in labels.items())
    (lab / "desired_state" / "animals.yaml").write_text(
        f"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
        f"    labels:\n{lines}\n"
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def run_cli(
    lab: Path, rest_url: str, grpc_target: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = dict(
        os.environ,
        TFS_RECONCILER_REST_URL=rest_url,
        TFS_RECONCILER_GRPC_TARGET=grpc_target,
        TFS_RECONCILER_MODELS_DIR=str(lab / "models"),
        TFS_RECONCILER_DESIRED=str(lab / "desired_state"),
        **env,
    )
    return subprocess.run(
        ["tfs-reconciler", *args],
        cwd=lab,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_restart_converges_and_reports_what_it_costs(
    lab: Path, start_tfs_container: StartTfsContainer
) -> None:
    tfs = start_tfs_container(lab / "models", wait_for_model="animals", wait_for_versions=(1, 2, 3))
    write_desired(lab, LAB_LABELS | {"stable": 3})

    with PredictStream(
        tfs.rest_url, "animals", DOG_EXAMPLE.read_bytes(), label="stable", max_seconds=60
    ) as stream:
        started = time.monotonic()
        result = run_cli(
            lab,
            tfs.rest_url,
            tfs.grpc_target,
            "apply",
            "--reload",
            "restart",
            "--container",
            tfs.name,
            "--timeout",
            "60",
        )
        elapsed = time.monotonic() - started

    assert result.returncode == 0, output(result)
    assert label_version(tfs.rest_url, MODEL, "stable") == 3
    print(
        f"\n--reload restart promotion: {len(stream.failures)} of {stream.total} stable predicts "
        f"failed (outage {stream.outage_seconds:.2f} s, one request every ~5 ms); apply took "
        f"{elapsed:.2f} s"
    )
    if stream.failures:
        print("first failure:", stream.failures[0])


def test_restart_with_the_docker_engine_down_is_a_clear_error(lab: Path) -> None:
    write_desired(lab, LAB_LABELS | {"stable": 3})
    original = (lab / "models" / "models.config").read_bytes()
    with SimulatorProcess(lab / "models") as sim:
        result = run_cli(
            lab,
            sim.rest_url,
            sim.grpc_target,
            "apply",
            "--reload",
            "restart",
            "--container",
            "tfs",
            "--timeout",
            "10",
            DOCKER_HOST="unix:///nonexistent.sock",
        )
        assert label_version(sim.rest_url, MODEL, "stable") == 2
    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr
    assert "error: the Docker engine does not answer" in result.stderr, output(result)
    assert "nothing was changed" in result.stderr
    assert (lab / "models" / "models.config").read_bytes() == original


def test_restart_of_an_unknown_container_is_a_clear_error(
    lab: Path, docker_client: docker.DockerClient
) -> None:
    write_desired(lab, LAB_LABELS | {"stable": 3})
    original = (lab / "models" / "models.config").read_bytes()
    with SimulatorProcess(lab / "models") as sim:
        result = run_cli(
            lab,
            sim.rest_url,
            sim.grpc_target,
            "apply",
            "--reload",
            "restart",
            "--container",
            "tfs-reconciler-no-such-container",
        )
    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr
    assert "error: no container tfs-reconciler-no-such-container" in result.stderr, output(result)
    assert "nothing was changed" in result.stderr
    assert (lab / "models" / "models.config").read_bytes() == original


def test_restart_by_a_label_no_container_has_is_a_clear_error(
    lab: Path, docker_client: docker.DockerClient
) -> None:
    write_desired(lab, LAB_LABELS | {"stable": 3})
    with SimulatorProcess(lab / "models") as sim:
        result = run_cli(
            lab,
            sim.rest_url,
            sim.grpc_target,
            "apply",
            "--reload",
            "restart",
            "--container-label",
            "org.tfs-reconciler.test=no-such-container",
        )
    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr
    assert "error: 0 containers match label org.tfs-reconciler.test=no-such-container" in (
        result.stderr
    ), output(result)
