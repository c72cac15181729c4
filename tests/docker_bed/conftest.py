"""Fixtures for tests against the simulator in Docker (``reconciler.testing.docker_bed``).

- ``docker_client`` (session): a ``docker.DockerClient`` of an engine that answers; dockerd is
  started when none does. Without an engine the docker tests are skipped, except under
  ``CI=true``, where they fail.
- ``tfs_image`` (session): the image tag to run, ``tfs-sim:local`` built when its sources
  changed; ``$TFS_BED_IMAGE`` names another image to use as it is (``tensorflow/serving:2.21.0``
  to run the same tests against the real server, where that image is present).
- ``lab_models_dir``: a fresh copy of ``examples/models`` in the test's ``tmp_path``.
- ``start_tfs_container``: a factory ``(models_dir=None, args=LAB_ARGS, **options) ->
  TfsContainer`` for containers of ``tfs_image``, each removed when the test ends, failed or
  not. ``models_dir=None`` means a fresh copy of the lab's models.
- ``tfs_container``: the lab's container (its models, its flags), every version AVAILABLE;
  ``.rest_url``, ``.grpc_target``, ``.name``, ``.models_dir``, ``.restart()``, ``.logs()``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.testing import docker_bed
from reconciler.testing.docker_bed import StartTfsContainer

LAB_MODEL = "animals"
LAB_VERSIONS = (1, 2, 3)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        return docker_bed.ensure_engine()
    except docker_bed.EngineUnavailableError as error:
        if _in_ci():
            pytest.fail(f"CI=true and no Docker engine: {error}", pytrace=False)
        pytest.skip(f"no Docker engine: {error}")


@pytest.fixture(scope="session")
def tfs_image(docker_client: docker.DockerClient) -> str:
    override = os.environ.get("TFS_BED_IMAGE")
    if override:
        return override
    return docker_bed.ensure_sim_image(docker_client).tag


@pytest.fixture
def lab_models_dir(tmp_path: Path) -> Path:
    return docker_bed.copy_example_models(tmp_path / "models")


@pytest.fixture
def start_tfs_container(
    docker_client: docker.DockerClient, tfs_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartTfsContainer]:
    with contextlib.ExitStack() as stack:

        def start(
            models_dir: Path | None = None,
            args: Sequence[str] = docker_bed.LAB_ARGS,
            **options: Any,
        ) -> docker_bed.TfsContainer:
            if models_dir is None:
                models_dir = docker_bed.copy_example_models(
                    tmp_path_factory.mktemp("tfs-models") / "models"
                )
            options.setdefault("image", tfs_image)
            return stack.enter_context(
                docker_bed.running_container(docker_client, models_dir, args, **options)
            )

        yield start


@pytest.fixture
def tfs_container(
    start_tfs_container: StartTfsContainer, lab_models_dir: Path
) -> docker_bed.TfsContainer:
    return start_tfs_container(
        lab_models_dir, wait_for_model=LAB_MODEL, wait_for_versions=LAB_VERSIONS
    )
