"""TFS behaviours read in TFS's source (reference section 10), each test naming the file and
function it follows: disk discovery only at the file-system poll, one missing base_path
stopping it for every model, serial loads highest first, what a reload waits for, and the
order in which ServerCore::ReloadConfig changes things."""

from __future__ import annotations

import time

import grpc
import pytest

from reconciler.proto import tensorflow_serving_pb2 as pb

from .tfs_contract import StartTfs, Tfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]


def fs_poll_is(tfs: Tfs, seconds: float) -> None:
    """Skip against a real TFS that was not started with this --file_system_poll_wait_seconds."""
    if not tfs.is_simulator and tfs.fs_poll_seconds != seconds:
        pytest.skip(f"needs TFS started with --file_system_poll_wait_seconds={seconds:g}")


def test_reload_does_not_scan_the_disk_new_versions_come_at_the_next_poll(
    start_tfs: StartTfs,
) -> None:
    """file_system_storage_path_source.cc FileSystemStoragePathSource::UpdateConfig stores the
    config; only PollFileSystemAndInvokeCallback (every --file_system_poll_wait_seconds)
    aspires versions."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")), specific=[1])),
        models={"a": [1, 2]},
        extra_args=["--file_system_poll_wait_seconds=3"],
    )
    fs_poll_is(tfs, 3)
    a = tfs.name("a")
    tfs.apply(server_config(model_config(a, tfs.base_path(a), specific=[1, 2])))
    assert tfs.states(a) == {1: "AVAILABLE"}
    tfs.wait_available(a, {1, 2}, timeout=20)


def test_poll_zero_polls_once_at_start_and_later_versions_are_never_acted_on(
    start_tfs: StartTfs,
) -> None:
    """FileSystemStoragePathSource::SetAspiredVersionsCallback: with
    file_system_poll_wait_seconds 0 the disk is polled by a one-shot thread, at start."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")), specific=[1])),
        models={"a": [1, 2]},
        extra_args=["--file_system_poll_wait_seconds=0"],
    )
    fs_poll_is(tfs, 0)
    a = tfs.name("a")
    tfs.apply(server_config(model_config(a, tfs.base_path(a), latest=3)))
    tfs.add_version(a, 3)
    time.sleep(2.0)  # many config polls and what would be many file-system polls
    assert tfs.states(a) == {1: "AVAILABLE"}


def test_one_missing_base_path_stops_discovery_for_every_model(start_tfs: StartTfs) -> None:
    """file_system_storage_path_source.cc PollFileSystemForConfig returns at the first servable
    whose base path is missing (PollFileSystemForServable: "Could not find base path ..."), and
    PollFileSystemAndInvokeCallback then calls back for no model at all."""
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a"))),
            model_config(t.name("b"), t.base_path(t.name("b"))),
        ),
        models={"a": [1], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    hidden = tfs.models_dir / f".{b}.away"
    (tfs.models_dir / b).rename(hidden)
    try:
        tfs.add_version(a, 2)
        time.sleep(3 * tfs.fs_poll_seconds + 1.0)
        assert tfs.states(a) == {1: "AVAILABLE"}, "no model gets new versions"
        assert tfs.states(b) == {1: "AVAILABLE"}, "nor drops old ones"
    finally:
        hidden.rename(tfs.models_dir / b)
    tfs.wait_states(a, {2: "AVAILABLE", 1: "END"})


def test_loads_run_one_at_a_time_highest_new_version_first(start_tfs: StartTfs) -> None:
    """model_servers/server.h num_load_threads 0: loads run in the manager thread one at a
    time (aspired_versions_manager.cc InvokePolicyAndExecuteAction); the policy loads the
    highest new aspired version first (availability_preserving_policy.cc GetNextAction)."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")), specific=[1])),
        models={"a": [1, 2, 3]},
        extra_args=["--sim_load_seconds_for=a=0.4"],
    )
    a = tfs.name("a")
    tfs.add_version(a, 4)
    tfs.apply(server_config(model_config(a, tfs.base_path(a), specific=[1, 2, 3, 4])))
    seen: list[dict[int, str]] = []
    deadline = time.monotonic() + tfs.settle_seconds + 5
    while time.monotonic() < deadline:
        states = tfs.states(a)
        if not seen or seen[-1] != states:
            seen.append(states)
        if all(states.get(v) == "AVAILABLE" for v in (1, 2, 3, 4)):
            break
        time.sleep(0.02)
    assert all(states.get(v) == "AVAILABLE" for v in (1, 2, 3, 4)), seen
    assert all(list(s.values()).count("LOADING") <= 1 for s in seen), seen
    became_available = []
    for snapshot in seen:
        for version, state in snapshot.items():
            if state == "AVAILABLE" and version not in became_available:
                became_available.append(version)
    assert became_available == [1, 4, 3, 2], seen


def test_new_model_whose_highest_version_fails_answers_unknown_though_lower_ones_load(
    start_tfs: StartTfs,
) -> None:
    """server_core.cc WaitUntilModelsAvailable (ServableRequest::Latest): the first version of
    the new model to reach AVAILABLE or END decides (servable_state_monitor.cc
    HasAnyServableInStreamReachedState); loads go highest first, so a failing highest version
    makes the reload UNKNOWN "1 model(s) did not become available: ..."."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1], "b": [1]},
    )
    a, b = tfs.name("a"), tfs.name("b")
    tfs.add_version(b, 2, saved_model=b"")
    new = server_config(
        model_config(a, tfs.base_path(a)), model_config(b, tfs.base_path(b), latest=2)
    )
    tfs.write_config(new)  # so that a config poll keeps it
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(new)
    assert refused.value.code() == grpc.StatusCode.UNKNOWN
    assert (refused.value.details() or "").startswith(
        f"1 model(s) did not become available: {{{{{{name: {b} version: 2}} due to error: "
        "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
        f"{tfs.base_path(b)}/2"
    )
    tfs.wait_states(b, {1: "AVAILABLE", 2: "END"})


def test_a_failed_reload_has_already_moved_the_labels(start_tfs: StartTfs) -> None:
    """server_core.cc ServerCore::ReloadConfig sets config_ and swaps the label map
    (UpdateModelVersionLabelMap) before AddModelsViaModelConfigList, whose
    CreateStoragePathRoutes refuses a new model's unsupported platform."""
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), specific=[1, 2])
        ),
        models={"a": [1, 2], "n": [1]},
    )
    a, n = tfs.name("a"), tfs.name("n")
    tfs.apply(
        server_config(model_config(a, tfs.base_path(a), specific=[1, 2], labels={"stable": 1}))
    )
    bad = server_config(model_config(a, tfs.base_path(a), specific=[1, 2], labels={"stable": 2}))
    bad.model_config_list.config.add(name=n, base_path=tfs.base_path(n), model_platform="nope")
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"Model {n} requests unsupported platform nope"
    assert tfs.label_version(a, "stable") == 2
    assert tfs.states(n) == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c, t: setattr(c, "base_path", "relative/path"),
            "Expected model {a} to have an absolute path or URI; got base_path()=relative/path",
        ),
        (
            lambda c, t: c.ClearField("model_platform"),
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is {a}",
        ),
        (
            lambda c, t: setattr(c, "model_platform", "tensorflow_lite"),
            "Illegal to change a model's platform. For model {a} platform was tensorflow and new "
            "platform requested is tensorflow_lite",
        ),
    ],
    ids=["relative-base-path", "no-platform", "platform-change"],
)
def test_validation_errors_come_before_anything_changes(
    start_tfs: StartTfs, change: object, message: str
) -> None:
    """server_core.cc ReloadConfig: ValidateModelConfigList (absolute base paths) and
    ValidateNoModelsChangePlatforms (GetPlatform of a model already served) run before config_
    or the labels change: INVALID_ARGUMENT, the old labels stay."""
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), specific=[1, 2])
        ),
        models={"a": [1, 2]},
    )
    a = tfs.name("a")
    tfs.apply(
        server_config(model_config(a, tfs.base_path(a), specific=[1, 2], labels={"stable": 1}))
    )
    bad = server_config(model_config(a, tfs.base_path(a), specific=[1, 2], labels={"stable": 2}))
    change(bad.model_config_list.config[0], tfs)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == message.format(a=a)
    assert tfs.label_version(a, "stable") == 1


def test_get_model_status_without_model_spec_is_invalid_argument(start_tfs: StartTfs) -> None:
    """get_model_status_impl.cc GetModelStatus: "Missing ModelSpec"."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
    )
    with pytest.raises(grpc.RpcError) as refused:
        tfs.model_service.GetModelStatus(pb.GetModelStatusRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "Missing ModelSpec"


def test_a_hanging_load_holds_every_later_load(start_tfs: StartTfs) -> None:
    """Loads run in the manager thread (num_load_threads 0), so one that never ends blocks
    every later load (a TFS load can hang; --sim_load_seconds_for=MODEL:V=inf plays it)."""
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), specific=[1]),
            model_config(t.name("b"), t.base_path(t.name("b")), specific=[1]),
        ),
        models={"a": [1, 2], "b": [1, 2]},
        extra_args=["--sim_load_seconds_for=a:2=inf"],
    )
    if not tfs.is_simulator:
        pytest.skip("needs the simulator's load-time knob")
    a, b = tfs.name("a"), tfs.name("b")
    tfs.apply(
        server_config(
            model_config(a, tfs.base_path(a), specific=[1, 2]),
            model_config(b, tfs.base_path(b), specific=[1, 2]),
        )
    )
    tfs.wait_states(a, {2: "LOADING"})
    time.sleep(1.0)
    assert tfs.states(b) == {2: "START", 1: "AVAILABLE"}


def test_sim_load_fail_knob_fails_the_load_like_a_broken_version(start_tfs: StartTfs) -> None:
    """--sim_load_fail_for=MODEL:V: the load is retried (--max_num_load_retries) and then ends
    in END with its error, as a broken SavedModel's does (basic_manager.cc LoadServable); the
    version before it keeps serving (availability_preserving_policy.cc)."""
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
        extra_args=["--sim_load_fail_for=a:2"],
    )
    if not tfs.is_simulator:
        pytest.skip("needs the simulator's knob")
    a = tfs.name("a")
    tfs.add_version(a, 2)
    tfs.wait_states(a, {2: "END"})
    assert tfs.states(a) == {2: "END", 1: "AVAILABLE"}
    status = tfs.get(f"/v1/models/{a}/versions/2").json()["model_version_status"][0]["status"]
    assert "--sim_load_fail_for" in status["error_message"]
