"""Unit tests of the TFS simulator's pure logic: lifecycle, policies, paths, flags, SavedModel
reading and ServerCore's config and label rules (fake clock, no ports)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.core import CoreOptions, Servable, ServerCore
from reconciler.testing.tfs_sim.disk import PathMap, scan_versions
from reconciler.testing.tfs_sim.errors import Code, TfsError
from reconciler.testing.tfs_sim.flags import parse_flags
from reconciler.testing.tfs_sim.lifecycle import LoadTiming, ModelLifecycle, State
from reconciler.testing.tfs_sim.model_config import VersionPolicy, parse_config_text, policy_of
from reconciler.testing.tfs_sim.predict import predict
from reconciler.testing.tfs_sim.savedmodel import (
    SavedModelInfo,
    load_saved_model,
    parse_saved_model,
)

EXAMPLE_MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
INFO = SavedModelInfo(path=Path("/x"), signatures={})


# --- lifecycle -------------------------------------------------------------------------


class FakeLoader:
    def __init__(self, failing: Iterable[int] = ()) -> None:
        self.failing = set(failing)
        self.calls: list[int] = []

    def __call__(self, version: int) -> SavedModelInfo:
        self.calls.append(version)
        if version in self.failing:
            raise TfsError(Code.NOT_FOUND, f"no SavedModel in {version}")
        return INFO


def states(lifecycle: ModelLifecycle) -> dict[int, str]:
    return {s.version: s.state.name for s in lifecycle.statuses()}


def run(lifecycle: ModelLifecycle, loader: FakeLoader, *times: float, load: float = 1.0) -> None:
    for now in times:
        lifecycle.step(now, loader, lambda _v: load)


def test_lifecycle_version_is_loading_for_its_load_time_then_available() -> None:
    lifecycle, loader = ModelLifecycle("m", LoadTiming()), FakeLoader()
    lifecycle.set_aspired([1])
    assert states(lifecycle) == {1: "START"}
    run(lifecycle, loader, 0.0)
    assert states(lifecycle) == {1: "LOADING"}
    run(lifecycle, loader, 0.99)
    assert states(lifecycle) == {1: "LOADING"}
    run(lifecycle, loader, 1.0)
    assert states(lifecycle) == {1: "AVAILABLE"}


def test_lifecycle_new_version_loads_before_old_one_unloads() -> None:
    lifecycle, loader = ModelLifecycle("m", LoadTiming()), FakeLoader()
    lifecycle.set_aspired([1])
    run(lifecycle, loader, 0.0, 1.0)
    lifecycle.set_aspired([2])
    run(lifecycle, loader, 2.0, 2.5)
    assert states(lifecycle) == {2: "LOADING", 1: "AVAILABLE"}
    run(lifecycle, loader, 3.0)
    assert states(lifecycle) == {2: "AVAILABLE", 1: "UNLOADING"}
    run(lifecycle, loader, 3.1)
    assert states(lifecycle) == {2: "AVAILABLE", 1: "END"}


def test_lifecycle_failing_load_retries_then_ends_with_error_and_old_version_stays() -> None:
    timing = LoadTiming(max_load_retries=2, retry_interval=10.0)
    lifecycle, loader = ModelLifecycle("m", timing), FakeLoader(failing={2})
    lifecycle.set_aspired([1])
    run(lifecycle, loader, 0.0, 1.0)
    lifecycle.set_aspired([2])
    run(lifecycle, loader, 2.0, 3.0, 13.9)
    assert states(lifecycle)[2] == "LOADING"
    run(lifecycle, loader, 14.0, 25.0)
    assert states(lifecycle) == {2: "END", 1: "AVAILABLE"}
    assert loader.calls.count(2) == 3  # one load and two retries
    (status,) = [s for s in lifecycle.statuses() if s.version == 2]
    assert status.error is not None and status.error.code == Code.NOT_FOUND


def test_lifecycle_dropping_every_version_unloads_all_and_end_stays_listed() -> None:
    lifecycle, loader = ModelLifecycle("m", LoadTiming()), FakeLoader()
    lifecycle.set_aspired([1, 2])
    run(lifecycle, loader, 0.0, 1.0)
    lifecycle.set_aspired([])
    run(lifecycle, loader, 2.0, 2.1)
    assert states(lifecycle) == {2: "END", 1: "END"}
    lifecycle.set_aspired([2])  # aspired again: starts over
    assert states(lifecycle) == {2: "START", 1: "END"}


def test_lifecycle_failed_version_is_not_retried_while_still_aspired() -> None:
    lifecycle, loader = ModelLifecycle("m", LoadTiming(max_load_retries=0)), FakeLoader({1})
    lifecycle.set_aspired([1])
    run(lifecycle, loader, 0.0, 1.0)
    lifecycle.set_aspired([1])
    run(lifecycle, loader, 2.0, 3.0)
    assert states(lifecycle) == {1: "END"}
    assert loader.calls == [1]


# --- policies, paths, folders ------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy("latest", 1), {7}),
        (VersionPolicy("latest", 2), {3, 7}),
        (VersionPolicy("all"), {1, 3, 7}),
        (VersionPolicy("specific", versions=frozenset({1, 5})), {1}),
    ],
)
def test_version_policy_chooses_from_disk(policy: VersionPolicy, expected: set[int]) -> None:
    assert policy.choose({1, 3, 7}) == expected


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


def test_scan_versions_keeps_integer_named_folders_only(tmp_path: Path) -> None:
    for name in ("1", "10", "007", "latest", "-2", ".3.tmp", "4a"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("file")
    assert scan_versions(tmp_path) == {1, 10, 7}
    assert scan_versions(tmp_path / "missing") is None


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


def test_flags_defaults_are_tfs_defaults() -> None:
    flags = parse_flags([])
    assert (flags.port, flags.rest_api_port, flags.file_system_poll_wait_seconds) == (8500, 8501, 1)
    assert flags.model_config_file_poll_wait_seconds == 0
    assert (flags.max_num_load_retries, flags.load_retry_interval_micros) == (5, 60_000_000)


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
    *models: str, labels: dict[str, int] | None = None, specific: list[int] | None = None
) -> pb.ModelServerConfig:
    result = pb.ModelServerConfig()
    for name in models:
        entry = result.model_config_list.config.add(name=name, base_path=f"/models/{name}")
        if specific is not None:
            entry.model_version_policy.specific.versions.extend(specific)
        for label, version in (labels or {}).items():
            entry.version_labels[label] = version
    return result


@pytest.fixture
def models(tmp_path: Path) -> Path:
    for version in (1, 2, 3):
        (tmp_path / "m" / str(version)).mkdir(parents=True)
        (tmp_path / "m" / str(version) / "saved_model.pb").write_bytes(
            (EXAMPLE_MODELS / "animals" / str(version) / "saved_model.pb").read_bytes()
        )
    return tmp_path


def core_for(models: Path, allow: bool = False, step: float = 0.0) -> tuple[ServerCore, Clock]:
    clock = Clock(step)
    options = CoreOptions(
        allow_version_labels_for_unavailable_models=allow,
        path_map=PathMap.parse([f"/models={models}"]),
    )
    return ServerCore(options, clock), clock


def refused(core: ServerCore, new: pb.ModelServerConfig) -> TfsError:
    with pytest.raises(TfsError) as error:
        core.reload(new)
    return error.value


def test_core_refuses_label_on_unloaded_version_and_keeps_old_labels(models: Path) -> None:
    core, _ = core_for(models)
    core.reload(config("m", specific=[1]))
    core.reload(config("m", specific=[1], labels={"stable": 1}))
    error = refused(core, config("m", specific=[1, 2], labels={"stable": 2}))
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 2 of model m, which is not currently available "
        "for inference",
    )
    assert core.labels("m") == {"stable": 1}
    assert [s.version for s in core.status("m")] == [1]  # version 2 was not added either


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
    clock.now += 1
    core.step()
    assert {s.version: s.state for s in core.status("m")} == {2: State.AVAILABLE, 1: State.END}
    with pytest.raises(TfsError) as error:
        core.resolve("m", label="stable")
    assert error.value.code == Code.NOT_FOUND


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
    ],
)
def test_core_rejects_invalid_configs(
    models: Path, bad: pb.ModelServerConfig, code: Code, message: str
) -> None:
    core, _ = core_for(models)
    core.reload(config("m"))
    error = refused(core, bad)
    assert error.code == code and error.message.startswith(message)
    assert [s.state for s in core.status("m")] == [State.AVAILABLE]


def test_core_refuses_a_platform_change(models: Path) -> None:
    core, _ = core_for(models)
    core.reload(config("m"))
    changed = config("m")
    changed.model_config_list.config[0].model_platform = "tensorflow_lite"
    assert refused(core, changed).code == Code.INVALID_ARGUMENT


def test_core_empty_config_changes_nothing(models: Path) -> None:
    core, _ = core_for(models)
    core.reload(config("m"))
    core.reload(pb.ModelServerConfig())
    assert [s.version for s in core.status("m")] == [3]


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


def test_stand_in_predictions_have_the_signature_shape_and_depend_on_version_and_input() -> None:
    image = [[[0.5, 0.5, 0.5]] * 8] * 8
    other = [[[0.1, 0.2, 0.3]] * 8] * 8
    answer = predict(lab_servable(2), {"instances": [image, other]})["predictions"]
    assert len(answer) == 2 and all(len(row) == 3 for row in answer)
    assert sum(answer[0]) == pytest.approx(1.0, abs=1e-4)
    assert answer[0] != answer[1]
    assert predict(lab_servable(2), {"instances": [image]})["predictions"][0] == answer[0]
    assert predict(lab_servable(3), {"instances": [image]})["predictions"][0] != answer[0]
    columnar = predict(lab_servable(2), {"inputs": [image, other]})
    assert columnar == {"outputs": answer}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, "Expecting 'instances' to be an list/array"),
        ({"instances": [1], "signature_name": "nope"}, 'Serving signature key "nope" not found.'),
    ],
)
def test_bad_predict_bodies_are_invalid_argument(body: dict[str, object], message: str) -> None:
    with pytest.raises(TfsError) as error:
        predict(lab_servable(1), body)
    assert (error.value.code, error.value.message) == (Code.INVALID_ARGUMENT, message)
