"""Contract tests: the TFS behaviours of docs reference section 9 (/work/shared/tfs-reference.md
in the workspace), one test each, named ``test_NN_<behaviour>``.

**Against the simulator (default).** Each test starts its own ``tfs-sim`` process
(:class:`reconciler.testing.SimulatorProcess`) on a models folder in ``tmp_path`` made of copies
of ``examples/models/animals``, with fast timings: loads 0.2 s, file-system poll 0.2 s, config
poll 0.3 s, one load retry after 0.2 s. Run::

    pytest tests/contract -q

**Against a real TensorFlow Serving.** Give its addresses and the host folder that it sees as
``/models`` (bind-mounted); the tests then write their model folders and ``models.config``
there, push configs over gRPC and read REST, exactly as with the simulator. Start TFS with a
config file in that folder, short polls and short load retries, and labels allowed::

    mkdir -p /tmp/tfs-models && cp examples/models/models.config /tmp/tfs-models/
    cp -r examples/models/animals /tmp/tfs-models/ && chmod -R u+w /tmp/tfs-models
    docker run -d --rm --name tfs-contract -p 8500:8500 -p 8501:8501 \
      --mount type=bind,source=/tmp/tfs-models,target=/models tensorflow/serving:2.21.0 \
      --model_config_file=/models/models.config --model_config_file_poll_wait_seconds=1 \
      --file_system_poll_wait_seconds=1 --allow_version_labels_for_unavailable_models=true \
      --max_num_load_retries=1 --load_retry_interval_micros=500000
    TFS_REST_URL=http://localhost:8501 TFS_GRPC_TARGET=localhost:8500 \
      TFS_MODELS_DIR=/tmp/tfs-models TFS_CONFIG_POLL_SECONDS=1 TFS_FS_POLL_SECONDS=1 \
      pytest tests/contract -q

The same mode runs against one long-lived simulator (a check of the harness itself): replace
``docker run ... tensorflow/serving:2.21.0`` by ``tfs-sim --port=8500 --rest_api_port=8501
--sim_path_map=/models=/tmp/tfs-models`` and the same flags. The hang test
(``test_reload_adding_a_model_with_missing_base_path_...``) wedges a real TFS until restart,
so it runs only with ``TFS_CONTRACT_WEDGE=1``. After each test the harness puts the config
file back (and pushes it) and removes the model folders it made.

Optional: ``TFS_CONTAINER_MODELS_DIR`` (default ``/models``), ``TFS_CONFIG_FILE`` (default
``$TFS_MODELS_DIR/models.config``), ``TFS_ALLOW_LABELS`` (default ``true``: what TFS was started
with). Each test uses model names of its own, so the END history a real TFS keeps does not
leak between tests. Tests that need a start-up flag the running TFS lacks (e.g. labels not
allowed) or the simulator's load-time knob skip themselves, or the part that needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.proto import tensorflow_serving_pb2 as pb
from reconciler.testing import SimulatorProcess

from .tfs_contract import (
    SIM_CONFIG_POLL_SECONDS,
    SIM_FS_POLL_SECONDS,
    SIM_LOAD_SECONDS,
    SIM_RETRY_ARGS,
    StartTfs,
    Tfs,
    real_tfs,
)


@pytest.fixture
def start_tfs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartTfs]:
    """``start_tfs(config_for, models={name: versions}, allow_labels=True, extra_args=())``.

    ``allow_labels`` is the simulator's labels flag; a real TFS must run with it too, unless
    ``any_labels_flag`` (the test then reads ``tfs.allow_labels``).

    ``models`` maps base names to the versions to copy in; ``config_for(tfs)`` returns the
    first config (use ``tfs.name(base)`` and ``tfs.base_path(name)``). Against the simulator
    this starts a process with that config file; against a real TFS it writes and pushes it.
    """
    started: list[Tfs] = []
    request.node.contract_targets = started  # for the simulator's log in failure reports
    real_url = os.environ.get("TFS_REST_URL")

    def start(
        config_for: Callable[[Tfs], pb.ModelServerConfig],
        models: dict[str, Sequence[int]],
        *,
        allow_labels: bool = True,
        any_labels_flag: bool = False,
        extra_args: Sequence[str] = (),
    ) -> Tfs:
        if real_url:
            tfs = real_tfs(real_url, None if any_labels_flag else allow_labels)
        else:
            models_dir = tmp_path / "models"
            models_dir.mkdir(exist_ok=True)
            tfs = Tfs(
                rest_url="",
                grpc_target="",
                models_dir=models_dir,
                container_dir="/models",
                config_file=models_dir / "models.config",
                poll_seconds=SIM_CONFIG_POLL_SECONDS,
                fs_poll_seconds=SIM_FS_POLL_SECONDS,
                allow_labels=allow_labels,
            )
        for base, versions in models.items():
            tfs.add_model(tfs.name(base), versions)
        config = config_for(tfs)
        if real_url:
            tfs.apply(config)
        else:
            tfs.write_config(config)
            sim = SimulatorProcess(
                tfs.models_dir,
                tfs.config_file,
                poll_seconds=tfs.poll_seconds,
                file_system_poll_seconds=tfs.fs_poll_seconds,
                allow_labels_for_unavailable=allow_labels,
                load_seconds=SIM_LOAD_SECONDS,
                extra_args=[*SIM_RETRY_ARGS, *extra_args],
            )
            tfs.sim = sim
            started.append(tfs)
            sim.start()
            tfs.rest_url, tfs.grpc_target = sim.rest_url, sim.grpc_target
        if tfs not in started:
            started.append(tfs)
        return tfs

    yield start
    for tfs in started:
        tfs.close()
        if tfs.sim is not None:
            tfs.sim.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report carries the simulator's log."""
    report = yield
    if report.when == "call" and report.failed:
        for tfs in getattr(item, "contract_targets", []):
            if tfs.sim is not None:
                report.sections.append(("tfs-sim log", tfs.sim.log))
    return report
