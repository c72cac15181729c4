"""Issue 13 in the pod's shape, in Docker: a "pause" container owning the network and process
namespaces (as Kubernetes' pod sandbox does), a TFS container (``tfs-sim:local``) and a
``tfs-reconciler run --sidecar`` container joining both, sharing a volume for models.config
(the emptyDir), the models bind-mounted read-only, and the desired state a folder updated on the
host exactly as the kubelet updates a ConfigMap volume (reconciler.testing.kubelet).

The reconciler container runs the same image with ``tfs-reconciler`` as its entrypoint: the
image installs the whole project (its ``tfs-sim`` is the project's console script).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from daemon.daemon_harness import (
    add_version,
    desired_text,
    label_is,
    label_version,
    wait_until,
)
from docker.models.containers import Container
from docker.types import Mount

from reconciler.testing import docker_bed
from reconciler.testing.kubelet import AtomicWriter
from reconciler.testing.traffic import PredictStream

pytestmark = [pytest.mark.docker, pytest.mark.integration]

LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}
PROMOTED = {"deprecated": 1, "stable": 3, "canary": 3}
DOG_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dog_example.json"
GENEROUS = 120.0  # deadlines on a busy 2-core machine, never promises
EMPTY_CONFIG = "model_config_list {\n}\n"
TFS_ARGS = [
    "--model_config_file=/config/models.config",
    "--allow_version_labels_for_unavailable_models=true",
    "--sim_load_seconds=0.5",
    "--sim_load_seconds_for=animals:4=5",  # a promotion's new version loads for a while
]
SIDECAR_ARGS = [
    "run", "--sidecar",
    "--desired=/desired",
    "--models-dir=/models",
    "--config=/config/models.config",
    "--serving-root=/models",
    "--rest-url=http://127.0.0.1:8501",
    "--grpc-target=127.0.0.1:8500",
    "--reload=grpc",
    "--state-dir=/var/lib/tfs-reconciler",
    "--metrics-addr=0.0.0.0:9109",
    "--resync=5",
]  # fmt: skip
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[int, Any]:
    try:
        with OPENER.open(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except (OSError, ValueError):
        return 0, None


@dataclass
class Pod:
    sandbox: Container
    tfs: Container
    reconciler: Container
    configmap: AtomicWriter
    models: Path
    rest_port: int
    metrics_port: int

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def readyz(self) -> tuple[int, Any]:
        return get(f"http://127.0.0.1:{self.metrics_port}/readyz")

    def logs(self) -> str:
        parts = []
        for name, container in (("tfs", self.tfs), ("reconciler", self.reconciler)):
            with contextlib.suppress(docker.errors.APIError):
                parts.append(f"--- {name} ---\n{container.logs().decode(errors='replace')[-4000:]}")
        return "\n".join(parts)


@contextlib.contextmanager
def run_pod(client: docker.DockerClient, image: str, tmp_path: Path) -> Iterator[Pod]:
    models = docker_bed.copy_example_models(tmp_path / "models").resolve()
    folder = tmp_path / "configmap"
    folder.mkdir()
    configmap = AtomicWriter(folder)
    configmap.write({"animals.yaml": desired_text("[1, 2, 3]", LAB_LABELS).encode()})
    name = f"tfs-pod-{secrets.token_hex(4)}"
    labels = {docker_bed.LABEL_BED: name}
    rest_port, metrics_port = docker_bed.free_port(), docker_bed.free_port()
    volume = client.volumes.create(name=f"{name}-config", labels=labels)
    started: list[Container] = []
    try:
        config = Mount("/config", volume.name, type="volume")
        # The init container: TFS exits without its --model_config_file.
        client.containers.run(
            image, ["-c", f"printf '{EMPTY_CONFIG}' > /config/models.config"],
            entrypoint=["sh"], mounts=[config], remove=True, labels=labels,
        )  # fmt: skip
        sandbox = client.containers.run(
            image, ["infinity"], entrypoint=["sleep"], name=f"{name}-sandbox", detach=True,
            ports={"8501/tcp": ("127.0.0.1", rest_port), "9109/tcp": ("127.0.0.1", metrics_port)},
            labels=labels,
        )  # fmt: skip
        started.append(sandbox)
        shared = f"container:{sandbox.id}"  # the pod's network and process namespaces
        models_ro = Mount("/models", str(models), type="bind", read_only=True)
        tfs = client.containers.run(
            image, TFS_ARGS, name=f"{name}-tfs", detach=True, labels=labels,
            mounts=[models_ro, Mount("/config", volume.name, type="volume", read_only=True)],
            network_mode=shared, pid_mode=shared,
        )  # fmt: skip
        started.append(tfs)
        reconciler = client.containers.run(
            image, SIDECAR_ARGS, entrypoint=["tfs-reconciler"], name=f"{name}-reconciler",
            detach=True, labels=labels,
            mounts=[Mount("/desired", str(folder), type="bind", read_only=True), models_ro, config],
            network_mode=shared, pid_mode=shared,
        )  # fmt: skip
        started.append(reconciler)
        pod = Pod(sandbox, tfs, reconciler, configmap, models, rest_port, metrics_port)
        try:
            yield pod
        except BaseException:
            print(pod.logs())
            raise
    finally:
        for container in reversed(started):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.APIError):
            volume.remove(force=True)


def test_the_pod_converges_a_configmap_update_and_a_tfs_restart_boots_with_its_labels(
    docker_client: docker.DockerClient, tfs_image: str, tmp_path: Path
) -> None:
    with run_pod(docker_client, tfs_image, tmp_path) as pod:
        # From the seeded empty config to the desired state, in phases over localhost gRPC.
        wait_until(lambda: pod.readyz()[0] == 200, GENEROUS, 0.2, "ready")
        assert label_version(pod.rest_url, "stable") == 2

        pod.configmap.write({"animals.yaml": desired_text("[1, 2, 3]", PROMOTED).encode()})
        wait_until(label_is(pod.rest_url, "stable", 3), GENEROUS, 0.05, "stable moved to 3")
        assert pod.readyz()[0] == 200

        applied = pod.reconciler.logs().count(b'"outcome": "applied"')
        assert applied >= 2  # the first convergence and the ConfigMap update
        pod.tfs.stop(timeout=10)
        wait_until(lambda: pod.readyz()[0] == 503, GENEROUS, 0.2, "not ready while TFS is down")
        code, body = pod.readyz()
        assert code == 503 and "TFS does not answer" in body["reasons"][0], body
        pod.tfs.start()  # boots from the pod-local models.config the sidecar wrote
        wait_until(lambda: pod.readyz()[0] == 200, GENEROUS, 0.2, "ready after the restart")
        assert label_version(pod.rest_url, "stable") == 3
        # Not pushed again by the sidecar: TFS booted with the labels in the file.
        assert pod.reconciler.logs().count(b'"outcome": "applied"') == applied
        assert "Failed to start server" not in pod.tfs.logs().decode(errors="replace")


def version_state(rest_url: str, version: int) -> str | None:
    code, body = get(f"{rest_url}/v1/models/animals/versions/{version}")
    return body["model_version_status"][0]["state"] if code == 200 else None


def test_readiness_stays_up_while_a_promotion_loads_a_new_version(
    docker_client: docker.DockerClient, tfs_image: str, tmp_path: Path
) -> None:
    """The ConfigMap asks for a new version under `stable`: while it loads (5 s in TFS), the
    old version serves under the label and the pod stays ready, as every pod of the
    Deployment gets the change at about the same time."""
    with run_pod(docker_client, tfs_image, tmp_path) as pod:
        wait_until(lambda: pod.readyz()[0] == 200, GENEROUS, 0.2, "ready")
        add_version(pod.models, 4)
        promoted = {"deprecated": 1, "stable": 4, "canary": 3}
        codes: list[int] = []
        stop = threading.Event()

        def probe() -> None:
            while not stop.wait(0.05):
                codes.append(pod.readyz()[0])

        prober = threading.Thread(target=probe, daemon=True)
        with PredictStream(
            pod.rest_url, "animals", DOG_EXAMPLE.read_bytes(), label="stable", max_seconds=300
        ) as stream:
            prober.start()
            try:
                pod.configmap.write(
                    {"animals.yaml": desired_text("[1, 2, 3, 4]", promoted).encode()}
                )
                wait_until(
                    lambda: version_state(pod.rest_url, 4) == "LOADING",
                    GENEROUS,
                    0.05,
                    "version 4 loading",
                )
                # Asked while version 4 loads and the label still names version 2.
                assert pod.readyz()[0] == 200
                assert label_version(pod.rest_url, "stable") == 2
                wait_until(label_is(pod.rest_url, "stable", 4), GENEROUS, 0.05, "stable on 4")
            finally:
                stop.set()
                prober.join(15)
        assert stream.failures == []
        assert codes and set(codes) == {200}, codes


def test_a_single_file_bind_mount_of_the_desired_state_is_refused(
    docker_client: docker.DockerClient, tfs_image: str, tmp_path: Path
) -> None:
    """``docker run -v file:file``, like a subPath mount of one ConfigMap key."""
    folder = tmp_path / "configmap"
    folder.mkdir()
    AtomicWriter(folder).write({"animals.yaml": desired_text("[1, 2, 3]", LAB_LABELS).encode()})
    real = (folder / "animals.yaml").resolve()
    container = docker_client.containers.run(
        tfs_image,
        [*SIDECAR_ARGS, "--desired=/desired/animals.yaml", "--config=/tmp/models.config"],
        entrypoint=["tfs-reconciler"],
        detach=True,
        labels={docker_bed.LABEL_BED: "single-file"},
        mounts=[Mount("/desired/animals.yaml", str(real), type="bind", read_only=True)],
    )
    try:
        result = container.wait(timeout=GENEROUS)
        logs = container.logs().decode(errors="replace")
        assert result["StatusCode"] == 1, logs
        assert "/desired/animals.yaml: a single-file mount" in logs
    finally:
        container.remove(force=True)
