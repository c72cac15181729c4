"""deploy/kubernetes: the kustomize base and its git overlay, checked without a cluster.

Every object must deserialize into the official ``kubernetes`` client's models with no field
those models do not know (the client drops unknown fields silently, so a typo such as
``readinessProbes`` would vanish on the way to the API server: the test compares the object
with the model serialized back). The reconciler's arguments are parsed by the daemon's own
parser, and the probes, ports and mounts of both containers must agree with its flags.

The base is checked file by file (its ConfigMap built from the generator as kustomize does);
where ``kubectl`` is installed, the output of ``kubectl kustomize`` for the base and the
overlay is checked too. Nothing here reaches a cluster.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes.client import ApiClient

from reconciler.cli import build_parser
from reconciler.desired_files import load_desired

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
GIT_OVERLAY = KUBERNETES / "overlays" / "git"
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Object = dict[str, Any]


# --- reading the manifests ---------------------------------------------------------------


def base_objects() -> list[Object]:
    """The base as kustomize renders it, for what these checks read: the resources as written,
    with the common labels on selectors and pod templates, and the generated ConfigMap."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    objects: list[Object] = []
    for name in kustomization["resources"]:
        objects.extend(yaml.safe_load_all((BASE / name).read_text()))
    for generator in kustomization["configMapGenerator"]:
        assert generator["options"]["disableNameSuffixHash"] is True
        data = {Path(f).name: (BASE / f).read_text() for f in generator["files"]}
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return objects


def kustomize(path: Path) -> list[Object]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the files are checked one by one instead")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def only(objects: list[Object], kind: str) -> Object:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    chosen: Object = found[0]
    return chosen


def container(pod: Object, name: str) -> Object:
    found = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name]
    assert len(found) == 1, f"no container {name}"
    chosen: Object = found[0]
    return chosen


# --- the client's models -----------------------------------------------------------------


def model_name(obj: Object) -> str:
    """``apps/v1`` ``Deployment`` -> ``V1Deployment``, as the client names its models."""
    version = str(obj["apiVersion"]).rpartition("/")[2]
    return f"{version[0].upper()}{version[1:]}{obj['kind']}"


def unknown_fields(original: Any, known: Any, where: str = "") -> Iterator[str]:
    """Paths in ``original`` that the model, serialized back as ``known``, does not have."""
    if isinstance(original, dict):
        for key, value in original.items():
            if not isinstance(known, dict) or key not in known:
                yield f"{where}.{key}"
            else:
                yield from unknown_fields(value, known[key], f"{where}.{key}")
    elif isinstance(original, list):
        for index, value in enumerate(original):
            inner = known[index] if isinstance(known, list) and index < len(known) else None
            yield from unknown_fields(value, inner, f"{where}[{index}]")


def deserialize(obj: Object, model: str | None = None) -> Any:
    """`obj` as the client's `model` (by default the one its apiVersion and kind name),
    asserting that the model keeps every field."""
    client = ApiClient()
    name = model or model_name(obj)
    made = client._ApiClient__deserialize(obj, name)  # type: ignore[attr-defined]
    known = client.sanitize_for_serialization(made)  # type: ignore[no-untyped-call]
    problems = list(unknown_fields(obj, known))
    what = f"{obj['kind']} {obj['metadata']['name']}" if model is None else f"{name} {obj}"
    assert problems == [], f"{what}: unknown {problems}"
    return made


def without_directives(value: Any) -> Any:
    """A strategic merge patch's part without its ``$patch`` entries (deletions), which are
    kustomize's, not the API's."""
    if isinstance(value, dict):
        return {k: without_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [without_directives(v) for v in value if not (isinstance(v, dict) and "$patch" in v)]
    return value


def test_the_git_overlay_patch_has_no_unknown_field() -> None:
    """Checked without kubectl (which .ci/run does not install): a partial Deployment does not
    deserialize as one (its selector is required), so each container and volume the patch
    adds or changes is checked as the client's V1Container and V1Volume."""
    patch = yaml.safe_load((GIT_OVERLAY / "reconciler-git.yaml").read_text())
    pod = without_directives(patch["spec"]["template"]["spec"])
    assert set(pod) <= {"initContainers", "containers", "volumes"}, set(pod)
    for each in pod["initContainers"] + pod["containers"]:
        deserialize(each, "V1Container")
    for volume in pod["volumes"]:
        deserialize(volume, "V1Volume")
    broken = {**pod["containers"][0], "volumeMount": []}
    with pytest.raises(AssertionError, match="volumeMount"):
        deserialize(broken, "V1Container")


def test_an_unknown_field_is_caught() -> None:
    """The check itself: the client would drop a misspelt field without a word."""
    deployment = only(base_objects(), "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    tfs = container(broken["spec"]["template"]["spec"], "tfs")
    tfs["readinessProbes"] = tfs.pop("readinessProbe")
    with pytest.raises(AssertionError, match="readinessProbes"):
        deserialize(broken)


# --- what the daemon's flags require -----------------------------------------------------


def reconciler_flags(pod: Object) -> argparse.Namespace:
    args = container(pod, "reconciler")["args"]
    assert args[0] == "run"
    try:
        return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`tfs-reconciler {' '.join(args)}` is refused by the daemon's parser")


def port(obj: Object, name: str) -> int:
    for item in obj.get("ports", []):
        if item["name"] == name:
            return int(item["containerPort"])
    raise AssertionError(f"container {obj['name']} has no port {name}")


def probe_port(owner: Object, probe: Object) -> int:
    action = probe.get("httpGet") or probe.get("tcpSocket")
    assert action is not None
    value = action["port"]
    return port(owner, value) if isinstance(value, str) else int(value)


def mount_of(pod: Object, owner: Object, path: str) -> tuple[Object, Object]:
    """The volume mount holding ``path`` in ``owner`` (the deepest), and its volume."""
    found = [
        m
        for m in owner.get("volumeMounts", [])
        if PurePosixPath(path).is_relative_to(PurePosixPath(m["mountPath"]))
    ]
    assert found, f"{path} is on no volume of container {owner['name']}"
    mount = max(found, key=lambda m: len(m["mountPath"]))
    volumes = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert len(volumes) == 1, f"no volume {mount['name']}"
    return mount, volumes[0]


def check_deployment(deployment: Object, objects: list[Object]) -> argparse.Namespace:
    """Probes, ports and mounts against the daemon's flags; returns the flags."""
    pod = deployment["spec"]["template"]["spec"]
    tfs, reconciler = container(pod, "tfs"), container(pod, "reconciler")
    flags = reconciler_flags(pod)

    # Ports: the reconciler reaches its own TFS on loopback, at TFS's container ports.
    rest, grpc = urlsplit(flags.rest_url), urlsplit(f"//{flags.grpc_target}")
    assert (rest.hostname, grpc.hostname) == ("127.0.0.1", "127.0.0.1")
    assert rest.port == port(tfs, "http") == 8501
    assert grpc.port == port(tfs, "grpc") == 8500
    # The metrics endpoint answers the kubelet's probes, which come from outside the pod.
    metrics = urlsplit(f"//{flags.metrics_addr}")
    assert metrics.hostname not in LOOPBACK
    assert metrics.port == port(reconciler, "metrics")
    assert tfs["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probe_port(reconciler, tfs["readinessProbe"]) == metrics.port
    assert reconciler["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probe_port(reconciler, reconciler["livenessProbe"]) == metrics.port
    assert probe_port(tfs, tfs["livenessProbe"]) == port(tfs, "http")
    assert flags.reload == "grpc"
    # Model-aware readiness and the trap checks; TFS's flags are read from its process.
    assert flags.sidecar is True
    assert pod["shareProcessNamespace"] is True

    # TFS reads the models.config the reconciler writes: one emptyDir, writable by it alone.
    tfs_args = dict(a.removeprefix("--").split("=", 1) for a in tfs["args"])
    assert tfs_args["model_config_file"] == flags.config
    assert tfs_args["allow_version_labels_for_unavailable_models"] == "true"
    assert "model_config_file_poll_wait_seconds" not in tfs_args  # pushes, not polls
    mine, config = mount_of(pod, reconciler, flags.config)
    theirs, config_too = mount_of(pod, tfs, flags.config)
    assert config == config_too and "emptyDir" in config
    assert mine["mountPath"] == theirs["mountPath"]
    assert not mine.get("readOnly") and theirs.get("readOnly")
    seed = container(pod, "seed-models-config")
    assert mount_of(pod, seed, flags.config)[1] == config

    # The models: the same volume at --models-dir for the reconciler, --serving-root for TFS.
    _, models = mount_of(pod, reconciler, flags.models_dir)
    tfs_models, models_too = mount_of(pod, tfs, flags.serving_root)
    assert models == models_too and tfs_models["mountPath"] == flags.serving_root
    claim = models["persistentVolumeClaim"]["claimName"]
    assert only(objects, "PersistentVolumeClaim")["metadata"]["name"] == claim

    # Its lock, history and last-known-good config survive container restarts.
    state_mount, state = mount_of(pod, reconciler, flags.state_dir)
    assert "emptyDir" in state and not state_mount.get("readOnly")

    # Non-root, no privilege, requests on every container.
    assert pod["securityContext"]["runAsNonRoot"] is True
    for each in pod["containers"] + pod["initContainers"]:
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert each["resources"]["requests"], each["name"]

    # The Service sends to TFS's ports of these pods; the budget covers the same pods.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = only(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"grpc", "http"}
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return flags


def check_configmap_desired_state(
    pod: Object, flags: argparse.Namespace, objects: list[Object], tmp_path: Path
) -> None:
    """--desired is the ConfigMap's folder, and what the ConfigMap holds is a valid state."""
    mount, volume = mount_of(pod, container(pod, "reconciler"), flags.desired)
    assert mount["mountPath"] == flags.desired and "subPath" not in mount
    configmap = only(objects, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    for key, text in configmap["data"].items():
        (tmp_path / key).write_text(text)
    state = load_desired(tmp_path, flags.serving_root)
    assert [m.name for m in state.models] == ["animals"]


# --- the tests ---------------------------------------------------------------------------


def test_every_object_of_the_base_is_a_kubernetes_object_with_no_unknown_field() -> None:
    objects = base_objects()
    assert {o["kind"] for o in objects} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "ConfigMap",
    }
    for obj in objects:
        deserialize(obj)


def test_the_base_agrees_with_the_daemons_flags(tmp_path: Path) -> None:
    objects = base_objects()
    deployment = only(objects, "Deployment")
    flags = check_deployment(deployment, objects)
    check_configmap_desired_state(deployment["spec"]["template"]["spec"], flags, objects, tmp_path)


def test_the_git_overlay_patch_follows_a_remote_into_a_clone_it_makes() -> None:
    """Checked on the patch itself (no kubectl needed): the clone and the flags agree."""
    patch = yaml.safe_load((GIT_OVERLAY / "reconciler-git.yaml").read_text())
    pod = patch["spec"]["template"]["spec"]
    flags = reconciler_flags(pod)
    assert flags.git_remote
    clone = container(pod, "clone-desired-state")
    assert clone["command"][:2] == ["git", "clone"]
    remote, target = clone["command"][-2:]
    assert remote == flags.git_remote
    assert PurePosixPath(flags.desired).is_relative_to(target)
    mount = [m for m in container(pod, "reconciler")["volumeMounts"] if m["mountPath"] == target]
    assert [m["name"] for m in mount] == [
        m["name"] for m in clone["volumeMounts"] if m["mountPath"] == target
    ]
    assert not mount[0].get("readOnly")  # the daemon fetches into it


def test_kubectl_renders_the_base_as_checked(tmp_path: Path) -> None:
    objects = kustomize(BASE)
    for obj in objects:
        deserialize(obj)
    deployment = only(objects, "Deployment")
    flags = check_deployment(deployment, objects)
    check_configmap_desired_state(deployment["spec"]["template"]["spec"], flags, objects, tmp_path)


def test_kubectl_renders_the_git_overlay_without_the_configmap() -> None:
    objects = kustomize(GIT_OVERLAY)
    for obj in objects:
        deserialize(obj)
    assert "ConfigMap" not in {o["kind"] for o in objects}
    deployment = only(objects, "Deployment")
    flags = check_deployment(deployment, objects)
    pod = deployment["spec"]["template"]["spec"]
    assert "configMap" not in {key for volume in pod["volumes"] for key in volume}
    assert flags.git_remote and flags.desired.startswith("/repo/")
