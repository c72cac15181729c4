"""Issue 13 on a real cluster: skipped unless ``KUBECONFIG`` is set (no cluster runs here).

One command, for a user with a cluster, kubectl and the images pushed::

    KUBECONFIG=~/.kube/config \\
    TFS_RECONCILER_IMAGE=registry.example/tfs-reconciler:1.0 \\
    .venv/bin/python -m pytest tests/cluster -v

Optional: ``TFS_IMAGE`` (default ``tensorflow/serving:2.19.0``), ``TFS_K8S_NAMESPACE``
(default ``tfs-reconciler-check``; created when missing, and then deleted at the end) and
``TFS_K8S_MODELS_CLAIM`` (default ``tfs-models``): a claim in that namespace holding the lab's
models (``examples/models``: ``animals`` versions 1, 2 and 3), which the base mounts at
``/models``. The base (``deploy/kubernetes/base``) is rendered with ``kubectl kustomize``, its
images and namespace replaced, and applied. Then: every pod turns Ready (the TFS container's
readiness is the sidecar's model-aware ``/readyz``), an edit of the ConfigMap (``stable`` 2 ->
3) reaches every pod's TFS without a pod restart (the kubelet's sync takes up to about a
minute and a half), and a TFS container killed in one pod comes back serving its labels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="runs against a Kubernetes cluster: set KUBECONFIG (and TFS_RECONCILER_IMAGE)",
    ),
]

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base"
NAMESPACE = os.environ.get("TFS_K8S_NAMESPACE", "tfs-reconciler-check")
CLAIM = os.environ.get("TFS_K8S_MODELS_CLAIM", "tfs-models")
TFS_IMAGE = os.environ.get("TFS_IMAGE", "tensorflow/serving:2.19.0")
SYNC = 300.0  # the kubelet's ConfigMap sync, image pulls and model loads: generous


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(2)


def rendered(reconciler_image: str) -> list[dict[str, Any]]:
    objects = [o for o in yaml.safe_load_all(kubectl("kustomize", str(BASE))) if o]
    kept = []
    for item in objects:
        if item["kind"] == "PersistentVolumeClaim":
            continue  # the user's claim, holding the models, is used as it is
        item["metadata"]["namespace"] = NAMESPACE
        spec = item.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            is_tfs = container["name"] == "tfs"
            container["image"] = TFS_IMAGE if is_tfs else reconciler_image
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                volume["persistentVolumeClaim"]["claimName"] = CLAIM
        kept.append(item)
    return kept


def pods() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=tfs", "-o", "json")
    )["items"]
    return [p for p in found if not p["metadata"].get("deletionTimestamp")]


def all_ready() -> bool:
    found = pods()
    return bool(found) and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        for conditions in (p["status"].get("conditions", []) for p in found)
    )


def in_pod(pod: str, url: str) -> Any:
    """GET `url` from inside the pod (its reconciler container: Python, the pod's loopback)."""
    code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
    return json.loads(python_in(pod, code))


def python_in(pod: str, code: str) -> str:
    return kubectl("exec", "-n", NAMESPACE, pod, "-c", "reconciler", "--", "python3", "-c", code)


KILL_TFS = """
import os, signal
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        args = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
    except OSError:
        continue
    if any(a.startswith(b'--model_config_file=') for a in args):
        os.kill(int(pid), signal.SIGKILL)
"""


def stable(pod: str) -> int | None:
    try:
        body = in_pod(pod, "http://127.0.0.1:8501/v1/models/animals/labels/stable/metadata")
    except (AssertionError, ValueError):
        return None
    return int(body["model_spec"]["version"])


@pytest.fixture(scope="module")
def deployed() -> Iterator[None]:
    image = os.environ.get("TFS_RECONCILER_IMAGE")
    if not image:
        pytest.skip("set TFS_RECONCILER_IMAGE to the reconciler image your cluster can pull")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    created = not kubectl("get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "name")
    if created:
        kubectl("create", "namespace", NAMESPACE)
    try:
        claims = kubectl("get", "pvc", "-n", NAMESPACE, CLAIM, "--ignore-not-found", "-o", "name")
        if not claims:
            pytest.skip(f"no claim {CLAIM} in namespace {NAMESPACE} holding the lab's models")
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(rendered(image)))
        kubectl("rollout", "status", "-n", NAMESPACE, "deployment/tfs", f"--timeout={SYNC:.0f}s")
        yield
    finally:
        if created:
            kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_every_pod_turns_ready_serving_the_desired_labels(deployed: None) -> None:
    wait_until(all_ready, SYNC, "every pod Ready")
    for pod in pods():
        assert stable(pod["metadata"]["name"]) == 2
        ready = in_pod(pod["metadata"]["name"], "http://127.0.0.1:9109/readyz")
        assert ready["ready"] is True, ready


def test_a_configmap_edit_reaches_every_pod_without_a_restart(deployed: None) -> None:
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods()}
    current = json.loads(
        kubectl("get", "configmap", "-n", NAMESPACE, "tfs-desired-state", "-o", "json")
    )
    key, text = next(iter(current["data"].items()))
    patch = {"data": {key: text.replace("stable: 2", "stable: 3")}}
    kubectl("patch", "configmap", "-n", NAMESPACE, "tfs-desired-state", "--type=merge",
            "-p", json.dumps(patch))  # fmt: skip
    try:
        wait_until(lambda: all(stable(name) == 3 for name in before), SYNC, "stable 3 in every pod")
        assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods()} == before
        assert all_ready()
    finally:
        kubectl("patch", "configmap", "-n", NAMESPACE, "tfs-desired-state", "--type=merge",
                "-p", json.dumps({"data": {key: text}}))  # fmt: skip


def test_a_killed_tfs_container_comes_back_with_its_labels(deployed: None) -> None:
    wait_until(all_ready, SYNC, "every pod Ready")
    pod = pods()[0]["metadata"]["name"]
    want = stable(pod)
    # From the reconciler container, which shares the pod's process namespace: the process
    # with a --model_config_file (the image's entrypoint execs TFS, so it is the container's
    # main process, and the container restarts).
    python_in(pod, KILL_TFS)
    wait_until(all_ready, SYNC, "the pod Ready again")
    assert stable(pod) == want
