"""ServerCore's wait for a new model starts before the source sees the new config, as TFS's
fresh ServableStateMonitor does (server_core.cc, AddModelsViaModelConfigList): a file-system
poll due at the reload may load the new model within the reload's own step."""

from __future__ import annotations

import threading
from pathlib import Path

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing.tfs_sim.core import CoreOptions, ServerCore
from reconciler.testing.tfs_sim.disk import PathMap
from reconciler.testing.tfs_sim.lifecycle import LoadTiming

LAB_VERSION = Path(__file__).resolve().parents[2] / "examples" / "models" / "animals" / "1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_new_model_loaded_within_the_reloads_own_step_ends_the_wait(tmp_path: Path) -> None:
    for model in ("m", "n"):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / "saved_model.pb").write_bytes(
            (LAB_VERSION / "saved_model.pb").read_bytes()
        )
    clock = Clock()
    options = CoreOptions(
        path_map=PathMap.parse([f"/models={tmp_path}"]),
        timing=LoadTiming(max_load_retries=0),
        file_system_poll_wait_seconds=1.0,  # loads take 0 s (CoreOptions' default)
    )
    core = ServerCore(options, clock)
    config = pb.ModelServerConfig()
    config.model_config_list.config.add(
        name="m", base_path="/models/m", model_platform="tensorflow"
    )
    core.reload(config)
    clock.now = 1.0  # the next file-system poll is due: the reload's step runs it
    config.model_config_list.config.add(
        name="n", base_path="/models/n", model_platform="tensorflow"
    )
    # If the wait missed n's events it would never end on this still clock; the timer moves
    # the clock past wait_timeout then, so the reload fails instead of hanging the test.
    timer = threading.Timer(5.0, lambda: setattr(clock, "now", 100.0))
    timer.start()
    try:
        core.reload(config, wait_timeout=10.0)
    finally:
        timer.cancel()
    assert [s.state.name for s in core.status("n")] == ["AVAILABLE"]
