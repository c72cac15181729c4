"""Reference section 9, items 14-17 and 22: HandleReloadConfigRequest and config validation."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2

from reconciler.proto import tensorflow_serving_pb2 as pb

from .tfs_contract import StartTfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]

TRANSITION_ERROR = (
    "Cannot transition to requested config. It is only legal to transition from one "
    "ModelConfigList to another."
)


def test_14_reload_replaces_the_whole_config_and_omitted_models_unload(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a"))),
            model_config(t.name("b"), t.base_path(t.name("b"))),
        ),
        models={"a": [1], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    tfs.apply(server_config(model_config(b, tfs.base_path(b))))
    tfs.wait_states(a, {1: "END"})
    assert tfs.states(b) == {1: "AVAILABLE"}
    assert tfs.post(f"/v1/models/{a}:predict").status_code == 404


def test_15_reload_waits_for_new_models_but_not_for_new_versions_of_existing_ones(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")), specific=[1])),
        models={"a": [1, 2], "b": [1]},
        extra_args=["--sim_load_seconds_for=a:2=1.5", "--sim_load_seconds_for=b=0.5"],
    )
    a, b = tfs.name("a"), tfs.name("b")
    tfs.apply(
        server_config(
            model_config(a, tfs.base_path(a), specific=[1, 2]), model_config(b, tfs.base_path(b))
        )
    )
    states = tfs.states(a)
    assert states[1] == "AVAILABLE"
    if tfs.is_simulator:  # a real tiny model may load faster than this check
        assert states.get(2) in (None, "START", "LOADING"), states
    assert tfs.states(b) == {1: "AVAILABLE"}, "a new model is waited for"
    tfs.wait_available(a, {1, 2})


def test_16_custom_model_config_replacing_model_config_list_is_refused(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
    )
    a = tfs.name("a")
    custom = pb.ModelServerConfig(
        custom_model_config=any_pb2.Any(type_url="type.googleapis.com/example.Custom", value=b"")
    )
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(custom)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == TRANSITION_ERROR
    assert tfs.states(a) == {1: "AVAILABLE"}


def test_17_a_later_file_poll_overrides_a_pushed_config(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    # Pushed only (the file still lists just a): b loads, then the poll puts the file back.
    tfs.push(server_config(model_config(a, tfs.base_path(a)), model_config(b, tfs.base_path(b))))
    assert tfs.states(b) == {1: "AVAILABLE"}
    tfs.wait_states(b, {1: "END"})
    assert tfs.states(a) == {1: "AVAILABLE"}


def test_22_duplicate_model_names_in_one_config_are_rejected(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1, 2], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(
            server_config(
                model_config(b, tfs.base_path(b)),
                model_config(a, tfs.base_path(a), specific=[1]),
                model_config(a, tfs.base_path(a)),
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert a in (refused.value.details() or "")
    assert tfs.states(a) == {2: "AVAILABLE"}
    assert tfs.states(b) == {}
