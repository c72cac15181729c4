"""Two replicas whose models.config is one file, through a link or a shared mount, are
refused by name before any lock is taken (review of issue 12): the daemon's pass and apply
--fleet both said another tfs-reconciler held the lock, naming their own pid."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.fleet_replicas import one_config_each
from reconciler.problems import InputError
from reconciler.replica import Replica
from reconciler.settings import Settings


def replica(name: str, config: Path) -> Replica:
    return Replica(name=name, rest=f"http://{name}:8501", grpc=None, config=config)


def test_a_config_linked_to_another_replicas_is_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "a.config").write_text("")
    (tmp_path / "b.config").symlink_to(tmp_path / "a.config")
    base = Settings(state_dir=tmp_path / "state")
    with pytest.raises(InputError) as caught:
        one_config_each(
            base, [replica("tfs-a", tmp_path / "a.config"), replica("tfs-b", tmp_path / "b.config")]
        )
    assert "replicas tfs-a and tfs-b have one models.config" in str(caught.value)


def test_distinct_files_and_default_files_pass(tmp_path: Path) -> None:
    base = Settings(state_dir=tmp_path / "state")
    one_config_each(
        base,
        [
            replica("tfs-a", tmp_path / "a.config"),
            replica("tfs-b", tmp_path / "b.config"),
            Replica(name="tfs-c", rest="http://c:8501", grpc=None),
            Replica(name="tfs-d", rest="http://d:8501", grpc=None),
        ],
    )
