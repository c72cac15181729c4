"""Reference section 9, items 1-3: the model config file, read at start and polled."""

from __future__ import annotations

import time

import pytest
from google.protobuf import text_format

from reconciler.proto import tensorflow_serving_pb2 as pb

from .tfs_contract import StartTfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]


def test_01_reads_model_config_file_at_start(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a"))),
            model_config(t.name("b"), t.base_path(t.name("b")), all_versions=True),
        ),
        models={"a": [1, 2], "b": [1, 3]},
    )
    # Every model of the file is served from the start (TFS opens its ports after loading).
    served = text_format.Parse(tfs.config_file.read_text(), pb.ModelServerConfig())
    for entry in served.model_config_list.config:
        tfs.wait_states(entry.name, {}, timeout=1)
        assert tfs.available(entry.name), f"{entry.name} has no AVAILABLE version"
    assert tfs.available(tfs.name("a")) == {2}
    assert tfs.available(tfs.name("b")) == {1, 3}


def test_02_rereads_config_file_every_poll_and_applies_changes(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1, 2], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    assert tfs.states(b) == {}
    # Written to the file only, never pushed: the poll must find it.
    tfs.write_config(
        server_config(
            model_config(a, tfs.base_path(a), specific=[1]),
            model_config(b, tfs.base_path(b)),
        )
    )
    tfs.wait_available(b, {1})
    tfs.wait_available(a, {1})
    tfs.wait_states(a, {2: "END"})


def test_03_invalid_polled_config_is_ignored_and_old_config_keeps_serving(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1, 2], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    duplicate = server_config(
        model_config(a, tfs.base_path(a), specific=[1]), model_config(a, tfs.base_path(a))
    )
    for bad in ("model_config_list { config { name: 'x' base_path: ", duplicate):
        mark = len(tfs.sim.log) if tfs.sim else 0
        tfs.write_config(bad)
        if tfs.sim is not None:  # evidence that a poll read the bad file
            tfs.sim.wait_for_log(r"config_file_not_applied", timeout=5, after=mark)
        else:
            time.sleep(3 * tfs.poll_seconds)
        assert tfs.states(a) == {2: "AVAILABLE"}
        assert tfs.answer(f"/v1/models/{a}")
    # Polling goes on: a good file is applied again.
    tfs.write_config(
        server_config(model_config(a, tfs.base_path(a)), model_config(b, tfs.base_path(b)))
    )
    tfs.wait_available(b, {1})
