"""The test bed itself: what triggers an image build, and that fixtures clean up after failures."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import docker
import docker.errors
import pytest
from docker.models.images import Image

from reconciler.testing import docker_bed


def make_tree(root: Path) -> Path:
    (root / "reconciler" / "__pycache__").mkdir(parents=True)
    (root / "deploy" / "tfs-sim").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (root / "reconciler" / "core.py").write_text("X = 1\n")
    (root / "reconciler" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\0")
    (root / "deploy" / "tfs-sim" / "Dockerfile").write_text("FROM base\n")
    return root


def tree_hash(root: Path, base_image_id: str = "sha256:base") -> str:
    return docker_bed.source_hash(
        root, docker_bed.image_source_files(root), base_image_id=base_image_id
    )


def test_image_sources_are_the_package_pyproject_and_deploy_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    assert docker_bed.image_source_files(root) == [
        Path("pyproject.toml"),
        Path("reconciler/core.py"),
        Path("deploy/tfs-sim/Dockerfile"),
    ]


def test_source_hash_changes_with_a_source_file_the_dockerfile_or_the_base_image(
    tmp_path: Path,
) -> None:
    root = make_tree(tmp_path)
    first = tree_hash(root)
    (root / "reconciler" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"changed")
    (root / "reconciler" / ".core.py.swp").write_bytes(b"editor state")
    (root / "README.md").write_text("docs only\n")
    assert tree_hash(root) == first
    (root / "reconciler" / "core.py").write_text("X = 2\n")
    second = tree_hash(root)
    assert second != first
    (root / "deploy" / "tfs-sim" / "Dockerfile").write_text("FROM base\nEXPOSE 8501\n")
    third = tree_hash(root)
    assert third != second
    assert tree_hash(root, base_image_id="sha256:other") != third


def test_source_hash_changes_when_a_file_is_renamed(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    first = tree_hash(root)
    (root / "reconciler" / "core.py").rename(root / "reconciler" / "main.py")
    assert tree_hash(root) != first


def test_the_stage_clock_prints_plain_lines_with_the_seconds_elapsed() -> None:
    times = iter([100.0, 102.5, 230.25])
    out = io.StringIO()
    progress = docker_bed.StageClock(out, clock=lambda: next(times))
    progress("base image: building")
    progress("image: built")
    assert out.getvalue() == (
        "docker_bed [   2.5 s] base image: building\ndocker_bed [ 130.2 s] image: built\n"
    )


class FakeImages:
    """``client.images``: missing until built, then an image labelled with ``labels``."""

    def __init__(self, labels: dict[str, str], built: Callable[[], bool]) -> None:
        self.labels = labels
        self.built = built

    def get(self, name: str) -> SimpleNamespace:
        if not self.built():
            raise docker.errors.ImageNotFound(name)
        return SimpleNamespace(labels=self.labels, id="sha256:feed", short_id="feed")


def test_a_base_image_build_tells_its_stages_not_every_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """debootstrap prints a line per package: only its phases and the script's own lines."""
    monkeypatch.setenv("TFS_BED_STATE_DIR", str(tmp_path / "state"))
    root = make_tree(tmp_path / "root")
    script = root / "deploy" / "tfs-sim" / "build-base-image.sh"
    marker = tmp_path / "built"
    script.write_text(
        textwrap.dedent(
            f"""\
            echo "build-base-image: debootstrap bookworm" >&2
            echo "I: Retrieving adduser 3.134"
            echo "I: Installing core packages..."
            echo "I: Base system installed successfully."
            echo "build-base-image: importing as $1" >&2
            touch {marker}
            """
        )
    )
    client = SimpleNamespace(images=FakeImages({docker_bed.LABEL_RECIPE_HASH: "x"}, marker.exists))
    lines: list[str] = []
    docker_bed.ensure_base_image(client, root, tag="base:test", progress=lines.append)  # type: ignore[arg-type]
    log = tmp_path / "state" / "tfs-reconciler-base-image.log"
    assert lines == [
        f"base image: base:test missing; building it (minutes; log {log})",
        "build-base-image: debootstrap bookworm",
        "I: Installing core packages...",
        "I: Base system installed successfully.",
        "build-base-image: importing as base:test",
        "base image: base:test built",
    ]
    assert "I: Retrieving adduser 3.134" in log.read_text()


class FakeBuildApi:
    def __init__(self, chunks: list[dict[str, object]]) -> None:
        self.chunks = chunks

    def build(self, **_: object) -> Iterator[dict[str, object]]:
        yield from self.chunks


def test_a_docker_build_tells_each_step_as_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFS_BED_STATE_DIR", str(tmp_path))
    chunks: list[dict[str, object]] = [
        {"stream": "Step 1/3 : FROM base\n"},
        {"stream": " ---> 1234\n"},
        {"stream": "Step 2/3 : RUN python3 -m venv /opt/tfs-sim\n"},
        {"stream": "Step 3/3 : LABEL x=y\n"},
        {"aux": {"ID": "sha256:feed"}},
    ]
    client = SimpleNamespace(api=FakeBuildApi(chunks), images=FakeImages({}, lambda: True))
    lines: list[str] = []
    image = docker_bed._docker_build(client, tmp_path, "t:1", "hash", progress=lines.append)  # type: ignore[arg-type]
    assert image.id == "sha256:feed"
    assert lines == [
        "image: Step 1/3 : FROM base",
        "image: Step 2/3 : RUN python3 -m venv /opt/tfs-sim",
        "image: Step 3/3 : LABEL x=y",
    ]
    assert " ---> 1234" in (tmp_path / "tfs-reconciler-image-build.log").read_text()


def test_a_failed_docker_build_names_the_error_and_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TFS_BED_STATE_DIR", str(tmp_path))
    chunks: list[dict[str, object]] = [
        {"stream": "Step 1/2 : RUN false\n"},
        {"error": "The command '/bin/sh -c false' returned a non-zero code: 1"},
    ]
    client = SimpleNamespace(api=FakeBuildApi(chunks), images=FakeImages({}, lambda: True))
    with pytest.raises(
        docker_bed.DockerBedError, match=r"returned a non-zero code: 1;.*image-build"
    ):
        docker_bed._docker_build(client, tmp_path, "t:1", "hash")  # type: ignore[arg-type]


def snapshot_sources(tmp_path: Path) -> Path:
    """A copy of the image's sources, safe from edits made meanwhile in the work tree."""
    root = docker_bed.project_root()
    copy = tmp_path / "source"
    for relative in docker_bed.image_source_files(root):
        (copy / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, copy / relative)
    return copy


@pytest.mark.docker
def test_sim_image_is_built_only_when_no_image_has_the_sources_hash(
    docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = snapshot_sources(tmp_path)
    base = docker_bed.ensure_base_image(docker_client, source)
    files = docker_bed.image_source_files(source)
    current = docker_bed.source_hash(source, files, base_image_id=base.id or "")
    tag = f"tfs-bed-test:{secrets.token_hex(4)}"
    # A stand-in image (a label on the base) carrying the current hash: built in a second.
    (tmp_path / "stand-in").mkdir()
    (tmp_path / "stand-in" / "Dockerfile").write_text(
        f"FROM {docker_bed.BASE_IMAGE}\nLABEL {docker_bed.LABEL_SOURCE_HASH}={current}\n"
    )
    docker_client.images.build(path=str(tmp_path / "stand-in"), tag=tag, rm=True)
    builds: list[str] = []

    def fake_build(client: object, context: Path, tag: str, wanted: str, **_: object) -> Image:
        builds.append(wanted)
        return docker_client.images.get(tag)

    monkeypatch.setattr(docker_bed, "_build_context", lambda root, files, context: context)
    monkeypatch.setattr(docker_bed, "_docker_build", fake_build)
    try:
        unchanged = docker_bed.ensure_sim_image(docker_client, source, tag=tag)
        (source / "reconciler" / "added_module.py").write_text("ADDED = True\n")
        changed = docker_bed.ensure_sim_image(docker_client, source, tag=tag)
    finally:
        docker_client.images.remove(tag, force=True)
    assert (unchanged.built, unchanged.source_hash) == (False, current)
    assert changed.built
    assert builds == [changed.source_hash] != [current]


@pytest.mark.docker
def test_fixture_removes_its_container_when_the_test_fails(
    docker_client: docker.DockerClient, tfs_image: str, tmp_path: Path
) -> None:
    """A failing test in a pytest run of its own leaves no container behind."""
    conftest = Path(__file__).with_name("conftest.py")
    (tmp_path / "conftest.py").write_text(conftest.read_text())
    names_file = tmp_path / "names.txt"
    (tmp_path / "test_failing.py").write_text(
        textwrap.dedent(
            f"""
            def test_fails(start_tfs_container):
                container = start_tfs_container()
                open({str(names_file)!r}, "w").write(container.name)
                assert container.status() == "running"
                assert False, "the test body failed"
            """
        )
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)]
    inner = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TFS_BED_IMAGE": tfs_image},
    )
    assert inner.returncode == 1, inner.stdout + inner.stderr
    assert "1 failed" in inner.stdout
    name = names_file.read_text()
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(name)
