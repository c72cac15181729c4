"""The lab (../shared/lab/README.md) with ``tfs-sim:local`` in place of ``tensorflow/serving``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
import docker.errors
import grpc
import pytest

from reconciler.proto import tensorflow_serving_pb2 as tfs_pb2
from reconciler.proto import tensorflow_serving_pb2_grpc as tfs_grpc
from reconciler.testing import docker_bed
from reconciler.testing.docker_bed import StartTfsContainer, TfsContainer

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOG_EXAMPLE = EXAMPLES / "dog_example.json"
LAB_MODEL = "animals"
AVAILABLE = 30  # ModelVersionStatus.State
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def post_json(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with OPENER.open(request, timeout=10) as response:
        return int(response.status), json.load(response)


def get_json(url: str) -> Any:
    with OPENER.open(url, timeout=10) as response:
        return json.load(response)


def predict(rest_url: str, route: str) -> list[Any]:
    url = f"{rest_url}/v1/models/{LAB_MODEL}/{route}:predict"
    status, body = post_json(url, DOG_EXAMPLE.read_bytes())
    assert status == 200
    predictions = body["predictions"]
    assert isinstance(predictions, list)
    return predictions


def test_lab_container_serves_the_three_versions(tfs_container: TfsContainer) -> None:
    states = docker_bed.model_version_states(tfs_container.rest_url, LAB_MODEL)
    assert states == {"1": "AVAILABLE", "2": "AVAILABLE", "3": "AVAILABLE"}


def test_lab_labels_resolve_to_their_versions(tfs_container: TfsContainer) -> None:
    resolved = {
        label: get_json(f"{tfs_container.rest_url}/v1/models/{LAB_MODEL}/labels/{label}/metadata")[
            "model_spec"
        ]["version"]
        for label in ("deprecated", "stable", "canary")
    }
    assert resolved == {"deprecated": "1", "stable": "2", "canary": "3"}


def test_lab_predict_by_version_2_and_by_label_stable_answer_alike(
    tfs_container: TfsContainer,
) -> None:
    instances = json.loads(DOG_EXAMPLE.read_text())["instances"]
    by_version = predict(tfs_container.rest_url, "versions/2")
    by_label = predict(tfs_container.rest_url, "labels/stable")
    assert len(by_version) == len(instances)
    assert by_label == by_version


def test_grpc_port_answers_model_status(tfs_container: TfsContainer) -> None:
    options = [("grpc.enable_http_proxy", 0)]  # loopback: no proxy
    with grpc.insecure_channel(tfs_container.grpc_target, options=options) as channel:
        stub = tfs_grpc.ModelServiceStub(channel)  # type: ignore[no-untyped-call]
        request = tfs_pb2.GetModelStatusRequest(model_spec=tfs_pb2.ModelSpec(name=LAB_MODEL))
        response = stub.GetModelStatus(request, timeout=10)
    states = {s.version: s.state for s in response.model_version_status}
    assert states == {1: AVAILABLE, 2: AVAILABLE, 3: AVAILABLE}


def test_container_serves_again_after_restart(tfs_container: TfsContainer) -> None:
    before = predict(tfs_container.rest_url, "labels/stable")
    tfs_container.restart()
    tfs_container.wait_for_versions(LAB_MODEL, (1, 2, 3))
    assert tfs_container.status() == "running"
    assert predict(tfs_container.rest_url, "labels/stable") == before


def test_model_name_env_serves_one_model_like_the_official_image(
    start_tfs_container: StartTfsContainer,
) -> None:
    # No flags: the entrypoint's --model_name=$MODEL_NAME --model_base_path=/models/$MODEL_NAME.
    container = start_tfs_container(
        args=(),
        environment={"MODEL_NAME": LAB_MODEL},
        wait_for_model=LAB_MODEL,
        wait_for_versions=(3,),
    )
    states = docker_bed.model_version_states(container.rest_url, LAB_MODEL)
    assert states.get("3") == "AVAILABLE"
    url = f"{container.rest_url}/v1/models/{LAB_MODEL}:predict"
    status, body = post_json(url, DOG_EXAMPLE.read_bytes())
    assert status == 200
    assert isinstance(body["predictions"], list)


def test_container_is_removed_when_the_block_raises(
    docker_client: docker.DockerClient, tfs_image: str, lab_models_dir: Path
) -> None:
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        docker_bed.running_container(docker_client, lab_models_dir, image=tfs_image) as container,
    ):
        name = container.name
        assert container.status() == "running"
        raise RuntimeError("test body failed")
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)


def _require_cli(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def test_lab_docker_run_line_and_curl_requests(tfs_image: str, tmp_path: Path) -> None:
    """The lab's commands, as a person types them, with a free host port and -d for -t."""
    _require_cli("docker")
    _require_cli("curl")
    docker_bed.copy_example_models(tmp_path / "models")
    shutil.copy(DOG_EXAMPLE, tmp_path / "dog_example.json")
    port = docker_bed.free_port()
    run_line = (
        f"docker run -d --rm -p {port}:8501 "
        '--mount type=bind,source="$(pwd)/models",target=/models/ '
        f"{tfs_image} "
        "--model_config_file=/models/models.config "
        "--model_config_file_poll_wait_seconds=60 "
        "--allow_version_labels_for_unavailable_models=true"
    )
    started = subprocess.run(
        ["bash", "-c", run_line], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip().splitlines()[-1]
    try:
        rest_url = f"http://localhost:{port}"
        _wait_until_available(rest_url, container_id)
        answers = []
        for route in ("versions/2", "labels/stable"):
            curl_line = (
                f"curl -sS -w '\\n%{{http_code}}' -X POST {rest_url}/v1/models/animals/"
                f'{route}:predict -d @./dog_example.json -H "Content-Type: application/json"'
            )
            curl = subprocess.run(
                ["bash", "-c", curl_line], cwd=tmp_path, capture_output=True, text=True, timeout=30
            )
            assert curl.returncode == 0, curl.stderr
            body, _, http_code = curl.stdout.rpartition("\n")
            assert http_code == "200", curl.stdout
            answers.append(json.loads(body)["predictions"])
        assert isinstance(answers[0], list)
        assert answers[0] == answers[1]
    finally:
        subprocess.run(["docker", "rm", "-f", container_id], capture_output=True, timeout=60)
    gone = subprocess.run(["docker", "inspect", container_id], capture_output=True, timeout=30)
    assert gone.returncode != 0


def _wait_until_available(rest_url: str, container_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = docker_bed.model_version_states(rest_url, LAB_MODEL)
        if states and all(states.get(v) == "AVAILABLE" for v in ("1", "2", "3")):
            return
        time.sleep(0.2)
    logs = subprocess.run(["docker", "logs", container_id], capture_output=True, text=True)
    pytest.fail(
        f"the lab's container did not serve within {timeout:.0f} s:\n{logs.stdout}{logs.stderr}"
    )
