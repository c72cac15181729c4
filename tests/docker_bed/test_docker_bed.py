"""The test bed itself: what triggers an image build, and that fixtures clean up after failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import docker
import docker.errors
import pytest

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


@pytest.mark.docker
def test_sim_image_is_not_rebuilt_when_its_sources_are_unchanged(
    docker_client: docker.DockerClient, tfs_image: str
) -> None:
    if tfs_image != docker_bed.SIM_IMAGE:
        pytest.skip(f"TFS_BED_IMAGE={tfs_image}: no image is built")
    again = docker_bed.ensure_sim_image(docker_client)
    assert not again.built
    image = docker_client.images.get(docker_bed.SIM_IMAGE)
    assert image.labels[docker_bed.LABEL_SOURCE_HASH] == again.source_hash


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
