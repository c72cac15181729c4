"""TFS behaviours of the reference (sections 4 and 5) beyond the section 9 list, which the
reconciler relies on: a reload hangs on a new model whose base_path is missing; labels are
checked before the same change's unloads; a platform change is refused; an empty config over gRPC is
INVALID_ARGUMENT."""

from __future__ import annotations

import os

import grpc
import pytest

from reconciler.proto import tensorflow_serving_pb2 as pb

from .tfs_contract import StartTfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]


def test_reload_adding_a_model_with_missing_base_path_hangs_and_later_reloads_queue(
    start_tfs: StartTfs,
) -> None:
    if os.environ.get("TFS_REST_URL") and os.environ.get("TFS_CONTRACT_WEDGE") != "1":
        pytest.skip("wedges a real TFS until restart; set TFS_CONTRACT_WEDGE=1 to run it")
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
    )
    a = tfs.name("a")
    current = server_config(model_config(a, tfs.base_path(a)))
    missing = server_config(
        model_config(a, tfs.base_path(a)), model_config("ghost", tfs.base_path("no_such_dir"))
    )
    with pytest.raises(grpc.RpcError) as hung:
        tfs.push(missing, timeout=1.0)
    assert hung.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.RpcError) as queued:
        tfs.push(current, timeout=1.0)
    assert queued.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert tfs.states(a) == {1: "AVAILABLE"}  # serving goes on meanwhile


def test_label_is_checked_before_the_unloads_of_the_same_change_and_then_dangles(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(
                t.name("a"), t.base_path(t.name("a")), specific=[1, 2], labels={"stable": 2}
            )
        ),
        models={"a": [1, 2]},
    )
    a = tfs.name("a")
    # stable -> 1 while the same config drops version 1: accepted (1 is AVAILABLE now)...
    tfs.apply(server_config(model_config(a, tfs.base_path(a), specific=[2], labels={"stable": 1})))
    tfs.wait_states(a, {1: "END", 2: "AVAILABLE"})
    # ...and then the label points at nothing that serves.
    response = tfs.post(f"/v1/models/{a}/labels/stable:predict")
    assert response.status_code >= 400 and "error" in response.json()


def test_model_platform_change_is_refused(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
    )
    a = tfs.name("a")
    changed = server_config(model_config(a, tfs.base_path(a)))
    changed.model_config_list.config[0].model_platform = "tensorflow_lite"
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(changed)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert tfs.states(a) == {1: "AVAILABLE"}


def test_empty_config_over_grpc_is_refused_by_the_model_service(start_tfs: StartTfs) -> None:
    """model_service_impl.cc HandleReloadConfigRequest: a ModelServerConfig with no config set
    is INVALID_ARGUMENT (the default branch), and nothing changes."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
    )
    a = tfs.name("a")
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(pb.ModelServerConfig())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported"
    )
    assert tfs.states(a) == {1: "AVAILABLE"}
