"""The fleet file under attack: a link to a secret elsewhere, a FIFO in its place, one TFS
listed twice under two names (found by the review of issue 12)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from reconciler.fleet_file import load_fleet, parse_fleet
from reconciler.problems import InputError

SECRET = "apiVersion: SECRET-token-0123456789\nfleet: hunter2-SECRET\n"


def test_a_link_to_a_secret_outside_the_folder_is_not_read_nor_quoted(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "secret").write_text(SECRET)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "fleet.yaml").symlink_to(tmp_path / "etc" / "secret")
    with pytest.raises(InputError) as caught:
        load_fleet(tmp_path / "repo" / "fleet.yaml")
    assert "SECRET" not in str(caught.value)
    assert "a link to a file outside" in str(caught.value)


def test_a_link_into_a_subfolder_is_followed_as_a_configmap_mounts_it(tmp_path: Path) -> None:
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "fleet.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        "    - {name: a, rest: 'http://127.0.0.1:8501'}\n"
    )
    (tmp_path / "fleet.yaml").symlink_to("..data/fleet.yaml")
    assert [r.name for r in load_fleet(tmp_path / "fleet.yaml").replicas] == ["a"]


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fleet.yaml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_fleet(fifo)
        except InputError as error:
            outcome.append(error)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(60)  # generous: a refusal takes microseconds, the bug waits forever
    if worker.is_alive():  # unblock the open so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_fleet waited on a FIFO")
    assert outcome and "not a regular file" in str(outcome[0])


def test_one_rest_address_listed_under_two_names_is_refused() -> None:
    text = (
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        "    - {name: a, rest: 'http://127.0.0.1:8501'}\n"
        "    - {name: b, rest: 'http://127.0.0.1:8501/'}\n"
    )
    with pytest.raises(InputError) as caught:
        parse_fleet("fleet.yaml", text.encode())
    assert [str(p) for p in caught.value.problems] == [
        "fleet.yaml:5:23: fleet.replicas[1].rest: replica 'a' has this REST address too: one"
        " TFS listed twice would be counted twice, loaded and flipped as two"
    ]


def test_a_rest_address_with_a_password_is_refused() -> None:
    text = (
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        "    - {name: a, rest: 'http://user:s3cret@127.0.0.1:8501'}\n"
    )
    with pytest.raises(InputError) as caught:
        parse_fleet("fleet.yaml", text.encode())
    assert "fleet.replicas[0].rest" in str(caught.value)
    assert "no user:password@" in str(caught.value)
