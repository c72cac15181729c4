"""Reference section 9, items 14-17 and 22: HandleReloadConfigRequest and config validation."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2

from reconciler.proto import tensorflow_serving_pb2 as pb

from .tfs_contract import StartTfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]

RELOAD_TYPE_ERROR = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
    "is currently supported"
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
    """server_core.cc AddModelsViaModelConfigList waits (WaitUntilModelsAvailable) for new
    models only; FileSystemStoragePathSource::UpdateConfig leaves the new version of an
    existing model to the next file-system poll. The simulator loads models in name order
    (TFS's BasicManager map is unordered), so the new model "a" loads before "z"'s version 2."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("z"), t.base_path(t.name("z")), specific=[1])),
        models={"z": [1, 2], "a": [1]},
        extra_args=["--sim_load_seconds_for=z:2=1.5", "--sim_load_seconds_for=a=0.5"],
    )
    z, a = tfs.name("z"), tfs.name("a")
    tfs.apply(
        server_config(
            model_config(z, tfs.base_path(z), specific=[1, 2]), model_config(a, tfs.base_path(a))
        )
    )
    assert tfs.states(a) == {1: "AVAILABLE"}, "a new model is waited for"
    states = tfs.states(z)
    assert states[1] == "AVAILABLE"
    if tfs.is_simulator:  # a real TFS may load z's version 2 first, and a tiny model fast
        assert states.get(2) in (None, "START", "LOADING"), states
    tfs.wait_available(z, {1, 2})


def test_16_custom_model_config_over_grpc_is_refused_by_the_model_service(
    start_tfs: StartTfs,
) -> None:
    """model_service_impl.cc HandleReloadConfigRequest: anything but a ModelConfigList is
    INVALID_ARGUMENT before ServerCore sees it."""
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
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == RELOAD_TYPE_ERROR
    assert tfs.states(a) == {1: "AVAILABLE"}


def test_17_a_later_file_poll_overrides_a_pushed_config(start_tfs: StartTfs) -> None:
    """server.cc PollFilesystemAndReloadConfig re-applies the file on every poll."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    # Pushed only (the file still lists just a): the push returns once b is AVAILABLE (a new
    # model is waited for), then the next config poll puts the file back and b unloads.
    response = tfs.push(
        server_config(model_config(a, tfs.base_path(a)), model_config(b, tfs.base_path(b)))
    )
    assert response.status.error_code == 0
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
