"""The simulator as a process: the lab's command line, start-up failure, flags, signals, logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from reconciler.testing import SimulatorExited, SimulatorProcess

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LAB_MODELS = EXAMPLES / "models"
DOG = (EXAMPLES / "dog_example.json").read_bytes()
LABEL_ERROR = (
    "Request to assign label to version 3 of model animals, which is not currently available "
    "for inference"
)


def predict(sim: SimulatorProcess, path: str) -> object:
    response = requests.post(
        f"{sim.rest_url}/v1/models/animals{path}:predict", data=DOG, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_lab_command_line_serves_the_lab_and_logs_which_version_answered() -> None:
    with SimulatorProcess(LAB_MODELS, poll_seconds=60, load_seconds=0.1) as sim:
        assert predict(sim, "/labels/stable") == predict(sim, "/versions/2")
        assert predict(sim, "/labels/canary") == predict(sim, "")  # 3 is the highest
        assert predict(sim, "/versions/1") != predict(sim, "/versions/2")
        sim.wait_for_log(r"predict model=animals version=2 via=label:stable")
        sim.wait_for_log(r"predict model=animals version=3 via=latest")
    assert sim.returncode == 0
    assert f"Running gRPC ModelServer at 0.0.0.0:{sim.grpc_port}" in sim.log
    assert f"Exporting HTTP/REST API at:localhost:{sim.rest_port}" in sim.log


def test_lab_without_allow_labels_flag_fails_to_start() -> None:
    with pytest.raises(SimulatorExited) as exited:
        SimulatorProcess(LAB_MODELS, allow_labels_for_unavailable=False).start()
    assert exited.value.returncode == 255  # main.cc: return -1
    assert f"Failed to start server. Error: FAILED_PRECONDITION: {LABEL_ERROR}" in exited.value.log


def test_unparsable_config_fails_to_start_with_protobufs_error(tmp_path: Path) -> None:
    """main.cc + util/proto_util.h ParseProtoTextFile: "Invalid protobuf file: 'PATH'", and
    TextFormat's own error logged."""
    (tmp_path / "models.config").write_text("model_config_list { config { nme: 'x' } }\n")
    with pytest.raises(SimulatorExited) as exited:
        SimulatorProcess(tmp_path).start()
    assert exited.value.returncode == 255
    shown = tmp_path / "models.config"
    assert (
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{shown}'"
        in exited.value.log
    )
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:30: Message type "
        '"tensorflow.serving.ModelConfig" has no field named "nme".' in exited.value.log
    )


def test_latest_version_failing_at_start_fails_to_start(tmp_path: Path) -> None:
    """load_servables_fast.cc ConnectSourcesWithFastInitialLoad: UNKNOWN "N servable(s) did not
    become available: {...}" and main.cc's exit."""
    (tmp_path / "animals").mkdir()
    (tmp_path / "animals" / "1").symlink_to(LAB_MODELS / "animals" / "1")
    (tmp_path / "animals" / "2").mkdir()
    args = ["--model_name=animals", "--model_base_path=/models/animals", "--max_num_load_retries=0"]
    with pytest.raises(SimulatorExited) as exited:
        SimulatorProcess(tmp_path, extra_args=args).start()
    assert exited.value.returncode == 255
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: animals version: 2} due to error: NOT_FOUND: Could not find SavedModel .pb or "
        ".pbtxt at supplied export directory path: /models/animals/2." in exited.value.log
    )


def test_custom_model_config_at_start_aborts(tmp_path: Path) -> None:
    """server.cc LoadCustomModelConfig: LOG(FATAL) "ModelServer does not yet support custom
    model config." (the process aborts)."""
    (tmp_path / "models.config").write_text(
        "custom_model_config { type_url: 'type.googleapis.com/x.Y' }\n"
    )
    with pytest.raises(SimulatorExited) as exited:
        SimulatorProcess(tmp_path).start()
    assert exited.value.returncode == -signal.SIGABRT
    assert "ModelServer does not yet support custom model config." in exited.value.log


def test_unknown_tfs_flags_are_accepted_with_a_warning() -> None:
    extra = [
        "--rest_api_timeout_in_ms=5000",
        "--enable_batching",
        "--tensorflow_intra_op_parallelism=2",
    ]
    with SimulatorProcess(LAB_MODELS, extra_args=extra) as sim:
        requests.get(f"{sim.rest_url}/v1/models/animals", timeout=10).raise_for_status()
    for flag in extra:
        assert f"flag_ignored flag={flag}" in sim.log


def test_single_model_mode_serves_the_latest_version(tmp_path: Path) -> None:
    args = ["--model_name=animals", "--model_base_path=/models/animals"]
    with SimulatorProcess(LAB_MODELS, config_file=None, extra_args=args) as sim:
        assert sim.config_file is not None  # the lab folder has a models.config...
    # ...so point at a folder without one to get single-model mode.
    (tmp_path / "animals").symlink_to(LAB_MODELS / "animals")
    with SimulatorProcess(tmp_path, extra_args=args) as sim:
        assert sim.config_file is None
        body = requests.get(f"{sim.rest_url}/v1/models/animals", timeout=10).json()
        assert [s["version"] for s in body["model_version_status"]] == ["3"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_simulator_cleanly(signum: signal.Signals) -> None:
    sim = SimulatorProcess(LAB_MODELS).start()
    assert sim.pid is not None
    os.kill(sim.pid, signum)
    # Before stop()'s own SIGTERM: two signals at once may be handled in either order.
    sim.wait_for_log(f"signal name={signum.name}")
    assert sim.stop() == 0, sim.log


def test_a_burst_of_signals_still_stops_the_simulator_cleanly() -> None:
    # A second SIGTERM landing while the handler of the first held a lock once hung it.
    sim = SimulatorProcess(LAB_MODELS).start()
    assert sim.pid is not None
    for _ in range(200):
        os.kill(sim.pid, signal.SIGTERM)
    assert sim.stop() == 0, sim.log
    assert sim.log.count("signal name=SIGTERM") == 1


def test_console_script_and_module_show_help() -> None:
    for command in (
        [str(Path(sys.executable).parent / "tfs-sim")],
        [sys.executable, "-m", "reconciler.testing.tfs_sim"],
    ):
        result = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=30, check=True
        )
        assert "--model_config_file_poll_wait_seconds" in result.stdout
        assert "--sim_path_map" in result.stdout
