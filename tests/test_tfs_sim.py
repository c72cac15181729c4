"""Unit tests of the TFS simulator's pure logic: lifecycle, policies, paths, flags, SavedModel
reading and ServerCore's config and label rules (fake clock, no ports)."""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim import disk
from reconciler.testing.tfs_sim.core import CoreOptions, Servable, ServerCore
from reconciler.testing.tfs_sim.disk import PathMap, VersionDir, poll_servable, simple_atoi
from reconciler.testing.tfs_sim.errors import Code, TfsError
from reconciler.testing.tfs_sim.flags import parse_flags
from reconciler.testing.tfs_sim.json_tensor import (
    parse_json,
    predict_inputs,
    request_signature_name,
)
from reconciler.testing.tfs_sim.lifecycle import (
    LoadTiming,
    Manager,
    State,
    VersionStatus,
    not_available_message,
)
from reconciler.testing.tfs_sim.model_config import VersionPolicy, parse_config_text, policy_of
from reconciler.testing.tfs_sim.predict import classify_or_regress, predict, set_method_name_check
from reconciler.testing.tfs_sim.rest import RestServer, status_json, tensors_json
from reconciler.testing.tfs_sim.savedmodel import (
    SavedModelInfo,
    Signature,
    TensorSpec,
    load_saved_model,
    parse_saved_model,
)
from reconciler.tfs_rest import parse_header_lines

EXAMPLE_MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
INFO = SavedModelInfo(path=Path("/x"), signatures={})


# --- the manager (lifecycle) -------------------------------------------------------------


class FakeLoader:
    def __init__(self, failing: Iterable[int] = ()) -> None:
        self.failing = set(failing)
        self.calls: list[int] = []

    def __call__(self, _model: str, where: VersionDir) -> SavedModelInfo:
        self.calls.append(where.version)
        if where.version in self.failing:
            raise TfsError(Code.NOT_FOUND, f"no SavedModel in {where.version}")
        return INFO


def manager(loader: FakeLoader, timing: LoadTiming | None = None, load: float = 1.0) -> Manager:
    return Manager(timing or LoadTiming(), loader, lambda _m, _v: load)


def aspire(m: Manager, *versions: int, model: str = "m") -> None:
    m.set_aspired(model, [VersionDir(v, f"/models/{model}/{v}", Path("/x")) for v in versions])


def states(m: Manager, model: str = "m") -> dict[int, str]:
    return {s.version: s.state.name for s in m.statuses(model)}


def run(m: Manager, *times: float) -> None:
    for now in times:
        m.step(now)


class _AlwaysStepping(Manager):
    """A manager without the fast path: every step walks every version."""

    def step(self, now: float) -> None:
        self._changed = True
        super().step(now)


def _seen(m: Manager, model: str) -> list[tuple[int, State, str]]:
    return [(s.version, s.state, str(s.error)) for s in m.statuses(model)]


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("aspire"), st.sampled_from("ab"), st.frozensets(st.integers(1, 4))),
        st.tuples(st.just("step"), st.sampled_from([0.0, 0.02, 0.3, 0.5, 1.0, 2.5])),
        st.tuples(st.just("threads"), st.sampled_from([None, 0, 2])),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    program=_STEPS,
    load_threads=st.sampled_from([0, 2]),
    unload_seconds=st.sampled_from([0.0, 0.4]),
    failing=st.frozensets(st.integers(1, 4), max_size=2),
)
def test_manager_fast_path_is_observably_identical(
    program: list[tuple[Any, ...]],
    load_threads: int,
    unload_seconds: float,
    failing: frozenset[int],
) -> None:
    """A step that skips the walk (nothing changed, nothing due) leaves every event, status
    and answer as a step that walks every version."""
    timing = LoadTiming(
        max_load_retries=1,
        retry_interval=0.5,
        unload_seconds=unload_seconds,
        load_threads=load_threads,
    )
    logs: list[list[tuple[str, int, State]]] = [[], []]
    managers = [
        kind(
            timing,
            FakeLoader(failing),
            lambda _m, v: 0.0 if v % 2 else 1.0,
            observer=lambda m, v, st_, _e, log=log: log.append((m, v, st_)),  # type: ignore[misc]
        )
        for kind, log in zip((Manager, _AlwaysStepping), logs, strict=True)
    ]
    now = 0.0
    for op in program:
        for m in managers:
            if op[0] == "aspire":
                aspire(m, *sorted(op[2]), model=op[1])
            elif op[0] == "threads":
                m.initial_load_threads = op[1]
        if op[0] == "step":
            now += op[1]
        for m in managers:
            m.step(now)
        fast, slow = managers
        assert logs[0] == logs[1]
        assert fast.loading() == slow.loading()
        for model in "ab":
            assert _seen(fast, model) == _seen(slow, model)
            assert fast.highest_available(model) == slow.highest_available(model)
            for version in range(1, 5):
                assert (fast.available(model, version) is None) == (
                    slow.available(model, version) is None
                )


def test_manager_version_is_loading_for_its_load_time_then_available() -> None:
    m = manager(FakeLoader())
    aspire(m, 1)
    run(m, 0.0)
    assert states(m) == {1: "LOADING"}
    run(m, 0.99)
    assert states(m) == {1: "LOADING"}
    run(m, 1.0)
    assert states(m) == {1: "AVAILABLE"}


def test_manager_new_version_loads_before_old_one_unloads() -> None:
    m = manager(FakeLoader())
    aspire(m, 1)
    run(m, 0.0, 1.0)
    aspire(m, 2)
    run(m, 2.0, 2.5)
    assert states(m) == {2: "LOADING", 1: "AVAILABLE"}
    run(m, 3.0)
    assert states(m) == {2: "AVAILABLE", 1: "UNLOADING"}
    run(m, 3.1)
    assert states(m) == {2: "AVAILABLE", 1: "END"}


def test_manager_loads_one_at_a_time_highest_new_version_first() -> None:
    """aspired_versions_manager.cc (num_load_threads 0: loads in the manager thread) and
    availability_preserving_policy.cc GetNextAction (highest new aspired version first)."""
    m = manager(FakeLoader())
    aspire(m, 1, 2, 3)
    aspire(m, 5, model="n")
    run(m, 0.0)
    assert m.loading() == [("m", 3)]
    assert states(m) == {3: "LOADING", 2: "START", 1: "START"}
    assert states(m, "n") == {5: "START"}
    run(m, 1.0)
    assert m.loading() == [("m", 2)]
    run(m, 2.0, 3.0)
    assert m.loading() == [("n", 5)]
    run(m, 4.0)
    assert states(m) == {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"}
    assert states(m, "n") == {5: "AVAILABLE"}


def test_manager_with_load_threads_loads_in_parallel() -> None:
    """--num_load_threads N > 0: up to N loads at once (ServerCore::Options num_load_threads)."""
    m = manager(FakeLoader(), LoadTiming(load_threads=2))
    aspire(m, 1, 2, 3)
    run(m, 0.0)
    assert m.loading() == [("m", 2), ("m", 3)]
    run(m, 1.0)
    assert m.loading() == [("m", 1)]


def test_manager_failing_load_retries_then_ends_with_error_and_old_version_stays() -> None:
    loader = FakeLoader(failing={2})
    m = manager(loader, LoadTiming(max_load_retries=2, retry_interval=10.0))
    aspire(m, 1)
    run(m, 0.0, 1.0)
    aspire(m, 2)
    run(m, 2.0, 3.0, 13.9)
    assert states(m)[2] == "LOADING"
    run(m, 14.0, 25.0)
    assert states(m) == {2: "END", 1: "AVAILABLE"}
    assert loader.calls.count(2) == 3  # one load and two retries
    (status,) = [s for s in m.statuses("m") if s.version == 2]
    assert status.error is not None and status.error.code == Code.NOT_FOUND


def test_manager_dropping_every_version_unloads_all_and_end_stays_listed() -> None:
    m = manager(FakeLoader())
    aspire(m, 1, 2)
    run(m, 0.0, 1.0, 2.0)
    aspire(m)
    run(m, 3.0, 3.1, 3.2)
    assert states(m) == {2: "END", 1: "END"}
    aspire(m, 2)  # aspired again: starts over
    run(m, 3.3)
    assert states(m)[2] in ("START", "LOADING")


def test_manager_failed_version_is_not_retried_while_still_aspired() -> None:
    loader = FakeLoader({1})
    m = manager(loader, LoadTiming(max_load_retries=0))
    aspire(m, 1)
    run(m, 0.0, 1.0)
    aspire(m, 1)
    run(m, 2.0, 3.0)
    assert states(m) == {1: "END"}
    assert loader.calls == [1]


def test_manager_version_dropped_before_its_load_stays_start() -> None:
    """FlushServables/StopManagingServable drop a new, no longer aspired version without an
    event (basic_manager.cc), so the monitor keeps its START."""
    m = manager(FakeLoader())
    aspire(m, 1, 2)
    run(m, 0.0)
    aspire(m, 2)
    run(m, 1.0, 2.0)
    assert states(m) == {2: "AVAILABLE", 1: "START"}


def test_waiter_is_decided_by_the_first_version_to_reach_available_or_end() -> None:
    """servable_state_monitor.cc HasAnyServableInStreamReachedState: the highest version
    failing first decides, though lower versions load afterwards."""
    m = manager(FakeLoader(failing={3}), LoadTiming(max_load_retries=0))
    waiter = m.add_waiter(["m"], fresh=True)
    aspire(m, 1, 2, 3)
    run(m, 0.0, 1.0)
    assert waiter.result is not None
    assert [(model, version) for model, version, _ in waiter.failed()] == [("m", 3)]
    assert not_available_message(waiter, "model") == (
        "1 model(s) did not become available: {{{name: m version: 3} due to error: "
        "NOT_FOUND: no SavedModel in 3}, }"
    )
    run(m, 2.0, 3.0)
    assert states(m) == {3: "END", 2: "AVAILABLE", 1: "AVAILABLE"}


# --- policies, paths, folders ------------------------------------------------------------


def found(tmp: Path, policy: VersionPolicy) -> dict[int, str]:
    return {v: d.config_path for v, d in poll_servable("m", "/models/m", tmp, policy).items()}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy("latest", 1), {7}),
        (VersionPolicy("latest", 2), {3, 7}),
        (VersionPolicy("all"), {1, 3, 7}),
        (VersionPolicy("specific", versions=frozenset({1, 5})), {1}),
        (VersionPolicy("specific", versions=frozenset({1, 3})), {1, 3}),
    ],
)
def test_version_policy_chooses_from_disk(
    tmp_path: Path, policy: VersionPolicy, expected: set[int]
) -> None:
    for v in (1, 3, 7):
        (tmp_path / str(v)).mkdir()
    assert set(found(tmp_path, policy)) == expected


def test_no_policy_means_latest_one() -> None:
    config = parse_config_text("model_config_list { config { name: 'm' base_path: '/m' } }")
    assert policy_of(config.model_config_list.config[0]) == VersionPolicy("latest", 1)


def test_path_map_rewrites_the_longest_prefix_only_on_path_boundaries() -> None:
    paths = PathMap.parse(["/models=/host/models", "/models/special=/elsewhere"])
    assert paths.to_host("/models/animals/") == Path("/host/models/animals")
    assert paths.to_host("/models/special/x") == Path("/elsewhere/x")
    assert paths.to_host("/modelsfoo/x") == Path("/modelsfoo/x")
    with pytest.raises(ValueError, match="FROM=TO"):
        PathMap.parse(["/models"])


def test_version_names_parse_as_simple_atoi(tmp_path: Path) -> None:
    """file_system_storage_path_source.cc ParseVersionNumber (absl::SimpleAtoi): 0004 is
    version 4 and loads from 0004; a sign is allowed; a plain file with a numeric name is a
    version too; other names are ignored."""
    for name in ("1", "0004", "latest", "-2", ".3.tmp", "4a", "+9"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("file")
    assert found(tmp_path, VersionPolicy("all")) == {
        1: "/models/m/1",
        4: "/models/m/0004",
        -2: "/models/m/-2",
        9: "/models/m/+9",
        5: "/models/m/5",
    }
    assert found(tmp_path, VersionPolicy("latest", 1)) == {9: "/models/m/+9"}
    assert simple_atoi(" 12 ") == 12 and simple_atoi("9" * 30) is None


@pytest.mark.parametrize("listed", [["4", "04", "1"], ["04", "1", "4"]])
def test_two_names_of_one_version_resolve_in_sorted_order_whatever_the_directory_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[str]
) -> None:
    """file_system_storage_path_source.cc PollFileSystemForServable puts GetChildren's names
    in a std::set (sorted), then IndexChildrenByVersion lets the later of two names for one
    version win: "4" over "04", however readdir ordered them."""
    for name in listed:
        (tmp_path / name).mkdir()
    monkeypatch.setattr(disk, "list_children", lambda _base: list(listed))
    assert found(tmp_path, VersionPolicy("latest", 1)) == {4: "/models/m/4"}
    assert found(tmp_path, VersionPolicy("specific", versions=frozenset({1, 4}))) == {
        1: "/models/m/1",
        4: "/models/m/4",
    }
    assert found(tmp_path, VersionPolicy("all")) == {1: "/models/m/1", 4: "/models/m/04"}


def test_missing_base_path_is_an_error(tmp_path: Path) -> None:
    """PollFileSystemForServable: "Could not find base path ..." (INVALID_ARGUMENT)."""
    with pytest.raises(TfsError) as error:
        poll_servable("m", "/models/m", tmp_path / "missing", VersionPolicy("latest"))
    assert error.value.message == (
        "Could not find base path /models/m for servable m with error NOT_FOUND: /models/m; "
        "No such file or directory"
    )


# --- flags ---------------------------------------------------------------------------


def test_flags_accept_tfs_forms_and_ignore_unknown_ones() -> None:
    flags = parse_flags(
        [
            "--port=9000",
            "--rest_api_port=0",
            "--allow_version_labels_for_unavailable_models=true",
            "--rest_api_timeout_in_ms=5000",
            "--enable_batching",
            "--sim_load_seconds=0.5",
            "--sim_load_seconds_for=m=2",
            "--sim_load_seconds_for=m:3=3",
        ]
    )
    assert (flags.port, flags.rest_api_port) == (9000, 0)
    assert flags.allow_version_labels_for_unavailable_models is True
    assert flags.ignored == ("--rest_api_timeout_in_ms=5000", "--enable_batching")
    assert [flags.load_seconds("m", v) for v in (1, 3)] == [2.0, 3.0]
    assert flags.load_seconds("other", 1) == 0.5
    assert (
        parse_flags(
            ["--allow_version_labels_for_unavailable_models=false"]
        ).allow_version_labels_for_unavailable_models
        is False
    )
    assert (
        parse_flags(
            ["--allow_version_labels_for_unavailable_models"]
        ).allow_version_labels_for_unavailable_models
        is True
    )


def test_flags_are_taken_only_as_tensorflow_s_parser_takes_them() -> None:
    """command_line_flags.cc reads ``--name=value`` (a boolean also ``--name``) and stops at a
    bare ``--``; anything else is an unknown argument and the flag keeps its default."""
    flags = parse_flags(
        [
            "--rest_api_port",
            "9999",
            "-port=9000",
            "--file_system_poll_wait_seconds=5",
            "--",
            "--model_config_file=/models/models.config",
        ]
    )
    assert (flags.rest_api_port, flags.port) == (8501, 8500)
    assert flags.file_system_poll_wait_seconds == 5
    assert flags.model_config_file == ""
    assert flags.ignored == (
        "--rest_api_port",
        "9999",
        "-port=9000",
        "--model_config_file=/models/models.config",
    )


def test_flags_defaults_are_tfs_defaults() -> None:
    flags = parse_flags([])
    assert (flags.port, flags.rest_api_port, flags.file_system_poll_wait_seconds) == (8500, 8501, 1)
    assert flags.model_config_file_poll_wait_seconds == 0
    assert (flags.max_num_load_retries, flags.load_retry_interval_micros) == (5, 60_000_000)


def test_flags_num_load_threads_and_load_fail_knob() -> None:
    flags = parse_flags(
        ["--num_load_threads=2", "--sim_load_fail_for=m:3", "--sim_load_fail_for=n"]
    )
    assert flags.num_load_threads == 2
    assert [flags.load_fails("m", v) for v in (2, 3)] == [False, True]
    assert flags.load_fails("n", 7) and not flags.load_fails("o", 1)
    assert parse_flags(["--sim_load_seconds_for=m:3=inf"]).load_seconds("m", 3) == float("inf")
    with pytest.raises(SystemExit):
        parse_flags(["--sim_load_fail_for=m:x"])


@pytest.mark.parametrize("bad", ["--rest_api_port=abc", "--num_load_threads=1.5"])
def test_a_flag_value_that_does_not_parse_exits_255_as_main_cc_does(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """main.cc: when tensorflow::Flags::Parse fails, the usage goes to stdout and main
    returns -1."""
    with pytest.raises(SystemExit) as exited:
        parse_flags([bad])
    assert exited.value.code == 255
    assert capsys.readouterr().out.startswith("usage: tfs-sim")


def test_flags_reject_a_bad_load_time_rule() -> None:
    with pytest.raises(SystemExit):
        parse_flags(["--sim_load_seconds_for=nonsense"])
    with pytest.raises(argparse.ArgumentTypeError):
        from reconciler.testing.tfs_sim.flags import LoadSecondsRule

        LoadSecondsRule.parse("m:x=1")


# --- SavedModel --------------------------------------------------------------------------


def test_lab_savedmodel_loads_with_its_signature() -> None:
    info = load_saved_model(EXAMPLE_MODELS / "animals" / "2")
    signature = info.signatures["serving_default"]
    assert signature.inputs["input_image"].dims == (-1, 8, 8, 3)
    assert signature.outputs["softmax"].dims == (-1, 3)
    assert signature.method_name == "tensorflow/serving/predict"


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff\xff", b"hello, not a proto", b"\x08\x01"])
def test_corrupt_saved_model_is_data_loss(data: bytes) -> None:
    with pytest.raises(TfsError) as error:
        parse_saved_model(data, text=False, filename="/m/1/saved_model.pb")
    assert error.value.code == Code.DATA_LOSS
    assert error.value.message == "Can't parse /m/1/saved_model.pb as binary proto"


def test_missing_saved_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(TfsError) as error:
        load_saved_model(tmp_path)
    assert error.value.code == Code.NOT_FOUND
    assert "Could not find SavedModel .pb or .pbtxt" in error.value.message


def test_saved_model_text_without_serve_tag_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pbtxt").write_text(
        "saved_model_schema_version: 1 meta_graphs { meta_info_def { tags: 'train' } }"
    )
    with pytest.raises(TfsError) as error:
        load_saved_model(tmp_path)
    assert error.value.code == Code.NOT_FOUND
    assert "{ serve }" in error.value.message


# --- ServerCore: config and label rules ----------------------------------------------------


class Clock:
    """A fake clock: moves only when told (``now``), or by ``step`` at every reading."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def config(
    *models: str,
    labels: dict[str, int] | None = None,
    specific: list[int] | None = None,
    platform: str = "tensorflow",
) -> pb.ModelServerConfig:
    result = pb.ModelServerConfig()
    for name in models:
        entry = result.model_config_list.config.add(
            name=name, base_path=f"/models/{name}", model_platform=platform
        )
        if specific is not None:
            entry.model_version_policy.specific.versions.extend(specific)
        for label, version in (labels or {}).items():
            entry.version_labels[label] = version
    return result


def add_version(models: Path, model: str, version: int | str) -> None:
    (models / model / str(version)).mkdir(parents=True)
    (models / model / str(version) / "saved_model.pb").write_bytes(
        (EXAMPLE_MODELS / "animals" / "1" / "saved_model.pb").read_bytes()
    )


@pytest.fixture
def models(tmp_path: Path) -> Path:
    for version in (1, 2, 3):
        add_version(tmp_path, "m", version)
    return tmp_path


def core_for(
    models: Path,
    allow: bool = False,
    step: float = 0.0,
    poll: float = 1.0,
    fail: Iterable[tuple[str, int]] = (),
) -> tuple[ServerCore, Clock]:
    clock = Clock(step)
    failing = set(fail)
    options = CoreOptions(
        allow_version_labels_for_unavailable_models=allow,
        path_map=PathMap.parse([f"/models={models}"]),
        file_system_poll_wait_seconds=poll,
        timing=LoadTiming(max_load_retries=0),
        load_error=lambda m, v: TfsError(Code.UNKNOWN, "boom") if (m, v) in failing else None,
    )
    return ServerCore(options, clock), clock


def tick(core: ServerCore, clock: Clock, seconds: float = 1.0) -> None:
    """Let ``seconds`` pass (one file-system poll period by default) and settle."""
    clock.now += seconds
    for _ in range(5):
        core.step()


def versions(core: ServerCore, model: str = "m") -> dict[int, str]:
    return {s.version: s.state.name for s in core.status(model)}


def refused(core: ServerCore, new: pb.ModelServerConfig) -> TfsError:
    with pytest.raises(TfsError) as error:
        core.reload(new)
    return error.value


def test_core_refuses_label_on_unloaded_version_and_keeps_old_labels(models: Path) -> None:
    core, clock = core_for(models)
    core.reload(config("m", specific=[1]))
    core.reload(config("m", specific=[1], labels={"stable": 1}))
    error = refused(core, config("m", specific=[1, 2], labels={"stable": 2}))
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 2 of model m, which is not currently available "
        "for inference",
    )
    assert core.labels("m") == {"stable": 1}
    tick(core, clock)
    assert versions(core) == {1: "AVAILABLE"}  # version 2 was not added either


def test_core_allow_flag_admits_new_or_unchanged_labels_only(models: Path) -> None:
    core, _ = core_for(models, allow=True)
    core.reload(config("m", specific=[1], labels={"stable": 1, "canary": 3}))  # 3 not even aspired
    assert core.labels("m") == {"stable": 1, "canary": 3}
    error = refused(core, config("m", specific=[1, 2], labels={"stable": 2, "canary": 3}))
    assert error.code == Code.FAILED_PRECONDITION


def test_core_checks_labels_before_the_unloads_of_the_same_config(models: Path) -> None:
    core, clock = core_for(models)
    core.reload(config("m", specific=[1, 2]))
    # stable -> 1 while the same config drops version 1: accepted, then it dangles.
    core.reload(config("m", specific=[2], labels={"stable": 1}))
    tick(core, clock)
    assert versions(core) == {2: "AVAILABLE", 1: "END"}
    with pytest.raises(TfsError) as error:
        core.resolve("m", label="stable")
    assert error.value.code == Code.NOT_FOUND


def test_core_reload_never_scans_the_disk_the_next_poll_does(models: Path) -> None:
    """FileSystemStoragePathSource::UpdateConfig does not poll; the poll thread does."""
    core, clock = core_for(models, poll=5.0)
    core.reload(config("m", specific=[1]))
    core.reload(config("m", specific=[1, 2]))
    tick(core, clock, 4.0)
    assert versions(core) == {1: "AVAILABLE"}
    tick(core, clock, 1.0)
    assert versions(core) == {2: "AVAILABLE", 1: "AVAILABLE"}


def test_core_poll_zero_polls_once_at_start_and_never_again(models: Path) -> None:
    """SetAspiredVersionsCallback: file_system_poll_wait_seconds 0 is a one-shot thread."""
    core, clock = core_for(models, poll=0)
    core.reload(config("m", specific=[1]))
    core.reload(config("m", specific=[1, 2]))
    add_version(models, "m", 4)
    tick(core, clock, 100.0)
    assert versions(core) == {1: "AVAILABLE"}


def test_core_negative_poll_never_polls_and_start_up_waits(models: Path) -> None:
    core, _ = core_for(models, poll=-1, step=1.0)
    with pytest.raises(TfsError) as error:
        core.reload(config("m"), wait_timeout=3.0)
    assert error.value.code == Code.DEADLINE_EXCEEDED


def test_core_one_missing_base_path_stops_discovery_for_every_model(models: Path) -> None:
    """PollFileSystemForConfig returns at the first servable whose base path is missing."""
    add_version(models, "n", 1)
    core, clock = core_for(models)
    core.reload(config("m", "n"))
    for path in (models / "n" / "1").iterdir():
        path.unlink()
    (models / "n" / "1").rmdir()
    (models / "n").rmdir()
    add_version(models, "m", 4)
    tick(core, clock)
    assert versions(core) == {3: "AVAILABLE"}
    assert versions(core, "n") == {1: "AVAILABLE"}
    add_version(models, "n", 2)
    tick(core, clock)
    assert versions(core) == {4: "AVAILABLE", 3: "END"}
    assert versions(core, "n") == {2: "AVAILABLE", 1: "END"}


def test_core_new_model_waits_for_its_highest_version_and_fails_if_it_ends(models: Path) -> None:
    """ServerCore::WaitUntilModelsAvailable: UNKNOWN "... did not become available" when the
    highest version ends in END; the lower ones load and the config is in force."""
    add_version(models, "n", 1)
    add_version(models, "n", 2)
    core, clock = core_for(models, step=0.25, fail=[("n", 2)])
    core.reload(config("m"))
    new = config("m", "n", specific=[1, 2])
    new.model_config_list.config[0].ClearField("model_version_policy")
    error = refused(core, new)
    assert (error.code, error.message) == (
        Code.UNKNOWN,
        "1 model(s) did not become available: {{{name: n version: 2} due to error: "
        "UNKNOWN: boom}, }",
    )
    tick(core, clock)
    assert versions(core, "n") == {2: "END", 1: "AVAILABLE"}


def test_core_failed_reload_has_already_moved_the_labels(models: Path) -> None:
    """ServerCore::ReloadConfig replaces config_ and the label map before
    AddModelsViaModelConfigList, where CreateStoragePathRoutes refuses the platform."""
    add_version(models, "n", 1)
    core, _ = core_for(models)
    core.reload(config("m", specific=[1, 2]))
    core.reload(config("m", specific=[1, 2], labels={"stable": 1}))
    bad = config("m", specific=[1, 2], labels={"stable": 2})
    bad.model_config_list.config.add(
        name="n", base_path="/models/n", model_platform="tensorflow_lite"
    )
    error = refused(core, bad)
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Model n requests unsupported platform tensorflow_lite",
    )
    assert core.labels("m") == {"stable": 2}


def test_core_a_refused_label_has_already_replaced_config_(models: Path) -> None:
    """ServerCore::ReloadConfig sets config_ before UpdateModelVersionLabelMap: the next
    reload's platform check compares with the refused config."""
    core, _ = core_for(models)
    core.reload(config("m", specific=[1]))
    refused_config = config("m", specific=[1], labels={"stable": 2})
    refused_config.model_config_list.config.add(name="x", base_path="/models/x", model_platform="a")
    assert refused(core, refused_config).code == Code.FAILED_PRECONDITION
    later = config("m", specific=[1])
    later.model_config_list.config.add(name="x", base_path="/models/x", model_platform="b")
    assert refused(core, later).message == (
        "Illegal to change a model's platform. For model x platform was a and new platform "
        "requested is b"
    )


@pytest.mark.parametrize(
    ("bad", "code", "message"),
    [
        (config("m", "m"), Code.INVALID_ARGUMENT, "Illegal to list model m multiple times"),
        (
            pb.ModelServerConfig(custom_model_config=any_pb2.Any(type_url="x/y")),
            Code.FAILED_PRECONDITION,
            "Cannot transition to requested config. It is only legal to transition from one "
            "ModelConfigList to another.",
        ),
        (
            pb.ModelServerConfig(),
            Code.FAILED_PRECONDITION,
            "Cannot transition to requested config.",
        ),
        (
            parse_config_text("model_config_list { config { name: 'm' base_path: 'rel/m' } }"),
            Code.INVALID_ARGUMENT,
            "Expected model m to have an absolute path or URI; got base_path()=rel/m",
        ),
        (
            parse_config_text("model_config_list { config { name: 'm' base_path: '/models/m' } }"),
            Code.INVALID_ARGUMENT,
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is m",
        ),
        (
            config("m", platform="tensorflow_lite"),
            Code.INVALID_ARGUMENT,
            "Illegal to change a model's platform. For model m platform was tensorflow and new "
            "platform requested is tensorflow_lite",
        ),
    ],
)
def test_core_rejects_invalid_configs_before_anything_changes(
    models: Path, bad: pb.ModelServerConfig, code: Code, message: str
) -> None:
    """server_core.cc ReloadConfig: the transition check, ValidateModelConfigList, GetPlatform
    and ValidateNoModelsChangePlatforms run before config_ is replaced."""
    core, _ = core_for(models)
    core.reload(config("m", labels={}))
    error = refused(core, bad)
    assert error.code == code and error.message.startswith(message)
    assert [s.state for s in core.status("m")] == [State.AVAILABLE]


def test_core_new_model_without_versions_waits_until_its_deadline(models: Path) -> None:
    core, clock = core_for(models, step=0.5)
    core.reload(config("m"))
    started = clock.now
    with pytest.raises(TfsError) as error:
        core.reload(config("m", "missing"), wait_timeout=3.0)
    assert error.value.code == Code.DEADLINE_EXCEEDED
    assert clock.now - started >= 3.0


def test_core_status_and_resolve_errors(models: Path) -> None:
    core, _ = core_for(models)
    core.reload(config("m", labels={}))
    with pytest.raises(TfsError, match="Could not find any versions of model x"):
        core.status("x")
    with pytest.raises(TfsError, match="Could not find version 9 of model m"):
        core.status("m", 9)
    with pytest.raises(TfsError, match="Unrecognized servable version label: nope"):
        core.resolve("m", label="nope")
    assert core.resolve("m").version == 3


# --- predictions ---------------------------------------------------------------------------


def lab_servable(version: int) -> Servable:
    return Servable("animals", version, load_saved_model(EXAMPLE_MODELS / "animals" / str(version)))


def rest_predict(servable: Servable, body: object) -> dict[str, object]:
    """What the REST handler does once the servable is resolved."""
    doc = parse_json(json.dumps(body).encode())
    name = request_signature_name(doc)
    signature = servable.info.signatures[name or "serving_default"]
    form, inputs = predict_inputs(doc, name, {k: v.dtype for k, v in signature.inputs.items()})
    return tensors_json(predict(servable, name, inputs), form)


def test_stand_in_predictions_have_the_signature_shape_and_depend_on_version_and_input() -> None:
    image = [[[0.5, 0.5, 0.5]] * 8] * 8
    other = [[[0.1, 0.2, 0.3]] * 8] * 8
    answer = rest_predict(lab_servable(2), {"instances": [image, other]})["predictions"]
    assert isinstance(answer, list) and len(answer) == 2 and all(len(row) == 3 for row in answer)
    assert sum(answer[0]) == pytest.approx(1.0, abs=1e-4)
    assert answer[0] != answer[1]
    assert rest_predict(lab_servable(2), {"instances": [image]})["predictions"] == [answer[0]]
    assert rest_predict(lab_servable(3), {"instances": [image]})["predictions"] != [answer[0]]
    columnar = rest_predict(lab_servable(2), {"inputs": [image, other]})
    assert columnar == {"outputs": answer}


IMAGE = [[[0.5, 0.5, 0.5]] * 8] * 8


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing 'inputs' or 'instances' key"),
        (
            {"instances": []},
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            {"instances": [IMAGE], "inputs": [IMAGE]},
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        ({"instances": {"a": 1}}, "Expecting 'instances' to be an list/array"),
        (
            {"instances": [{"nope": IMAGE}]},
            "Failed to process element: 0 key: nope of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON object: does not have named input: nope",
        ),
        ({"inputs": {"nope": IMAGE}}, "Missing named input: input_image in 'inputs' object."),
        (
            {"instances": [["x"]]},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON "
            'Value: "x" Type: String is not of expected type: float',
        ),
        (
            {"instances": [[1.0, 2.0], [1.0]]},
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting tensor size: 2 but got: 1",
        ),
        (
            {"instances": [[1.0, 2.0], [[1.0], [2.0]]]},
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Expecting shape [2] but got: [2,1]",
        ),
        ({"signature_name": 3, "instances": [1]}, "'signature_name' key must be a string value."),
    ],
)
def test_bad_predict_bodies_are_refused_with_json_tensor_texts(
    body: dict[str, object], message: str
) -> None:
    """util/json_tensor.cc FillPredictRequestFromJson, FillTensorMapFromInstancesList,
    FillTensorMapFromInputsMap, AddInstanceItem, AddValueToTensor, FillSignature."""
    with pytest.raises(TfsError) as error:
        rest_predict(lab_servable(1), body)
    assert error.value.code == Code.INVALID_ARGUMENT
    assert message in error.value.message


def test_input_shape_the_signature_does_not_accept_is_refused() -> None:
    with pytest.raises(TfsError) as error:
        rest_predict(lab_servable(1), {"instances": [[1.0, 2.0]]})
    assert error.value.code == Code.INVALID_ARGUMENT
    assert "input_image" in error.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a": 1,]', "JSON Parse error: Missing a name for object member. at offset: 8"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    ],
)
def test_parse_json_answers_as_rapidjson(body: bytes, message: str) -> None:
    """util/json_tensor.cc ParseJson."""
    with pytest.raises(TfsError) as error:
        parse_json(body)
    assert error.value.message == message


def test_trailing_text_after_the_json_object_is_ignored() -> None:
    """ParseJson parses with kParseStopWhenDoneFlag."""
    assert parse_json(b'{"instances": [1]} trailing') == {"instances": [1]}


def with_method(servable: Servable, method: str) -> Servable:
    signature = dataclasses.replace(servable.info.signatures["serving_default"], method_name=method)
    info = dataclasses.replace(servable.info, signatures={"serving_default": signature})
    return dataclasses.replace(servable, info=info)


def test_method_name_is_checked_only_with_the_flag() -> None:
    """server.h enable_signature_method_name_check (default false): predict_util.cc
    VerifySignature and classifier.cc check the method name only when it is on."""
    classify_signed = with_method(lab_servable(2), "tensorflow/serving/classify")
    assert rest_predict(classify_signed, {"instances": [IMAGE]})["predictions"]
    try:
        set_method_name_check(True)
        weird = with_method(lab_servable(2), "custom/method")
        with pytest.raises(TfsError) as error:
            rest_predict(weird, {"instances": [IMAGE]})
        assert error.value.code == Code.INTERNAL
        with pytest.raises(TfsError) as error:
            classify_or_regress(lab_servable(2), "", "classify")
        assert error.value.message == (
            "Expected classification signature method_name to be tensorflow/serving/classify. "
            "Was: tensorflow/serving/predict"
        )
    finally:
        set_method_name_check(False)


# --- the REST server -----------------------------------------------------------------------


def test_a_metadata_answer_is_rendered_once_per_loaded_version() -> None:
    """Kept for the version's SavedModelInfo: the same answer while it stays loaded, a new one
    once the version was loaded again from a changed SavedModel."""
    server = RestServer(("127.0.0.1", 0), ServerCore(CoreOptions()))
    try:
        spec = TensorSpec("x:0", 1, (-1,))
        first = SavedModelInfo(Path("/m/1"), {"a": Signature({"x": spec}, {"y": spec}, "m")})
        again = SavedModelInfo(Path("/m/1"), {"b": Signature({"x": spec}, {"y": spec}, "m")})
        text = server.metadata_text("m", Servable("m", 1, first))
        assert server.metadata_text("m", Servable("m", 1, first)) is text
        body = json.loads(text)
        assert body["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
        assert list(body["metadata"]["signature_def"]["signature_def"]) == ["a"]
        reloaded = json.loads(server.metadata_text("m", Servable("m", 1, again)))
        assert list(reloaded["metadata"]["signature_def"]["signature_def"]) == ["b"]
    finally:
        server.server_close()


_HEADER_BYTES = st.sampled_from(
    [b"Host", b"Content-Length", b"X-a", b"From", b"From ", b"", b" ", b"\t", b":", b": ", b"a b",
     b"1", b"\xe9", b"\x00", b"\r", b"keep-alive", b"close", b"\r\n", b"\n"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(_HEADER_BYTES, max_size=6).map(b"".join), max_size=6))
def test_a_header_block_reads_as_the_stdlib_reads_it(pieces: list[bytes]) -> None:
    """The simulator's split of plain header lines gives what http.client.parse_headers
    (the email package's FeedParser) gives, odd lines included."""
    block = b"".join(p if p.endswith(b"\n") else p + b"\r\n" for p in pieces) + b"\r\n"
    lines = io.BytesIO(block).readlines()
    lines = lines[: next(i for i, line in enumerate(lines) if line in (b"\r\n", b"\n")) + 1]
    expected = http.client.parse_headers(io.BytesIO(b"".join(lines)))
    assert parse_header_lines(lines).items() == expected.items()


def test_a_status_answer_is_rendered_once_per_set_of_states() -> None:
    server = RestServer(("127.0.0.1", 0), ServerCore(CoreOptions()))
    try:
        failed = TfsError(Code.NOT_FOUND, "no SavedModel")
        sets = [
            [VersionStatus(2, State.AVAILABLE, None), VersionStatus(1, State.END, None)],
            [VersionStatus(2, State.AVAILABLE, None), VersionStatus(1, State.END, failed)],
            [VersionStatus(2, State.LOADING, None)],
        ]
        texts = [server.status_text(statuses) for statuses in sets]
        assert [json.loads(t) for t in texts] == [status_json(s) for s in sets]
        assert server.status_text(list(sets[0])) is texts[0]
        assert len(set(texts)) == 3
    finally:
        server.server_close()
