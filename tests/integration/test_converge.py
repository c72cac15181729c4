"""Converge (issue 4) end to end: the installed `tfs-reconciler` against the TFS simulator.

Each test runs the console script in a subprocess on a private copy of the lab (the `lab`
fixture: `models/` and `desired_state/`), with TFS_RECONCILER_REST_URL/GRPC_TARGET pointing at
a `SimulatorProcess` on loopback. Load times are short (0.3 s) so each scenario takes seconds.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.lock import acquire
from reconciler.testing import SimulatorProcess, traffic
from reconciler.testing.lab import git as lab_git
from reconciler.testing.lab import label_version, wait_until
from reconciler.testing.simulator import free_port
from reconciler.testing.traffic import request

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOG_EXAMPLE = REPO / "examples" / "dog_example.json"
MODEL = "animals"
LOAD = 0.3  # seconds every version load takes in the simulator

LAB_YAML = """\
apiVersion: tfs-reconciler/v1
models:
  animals:
    versions: {versions}
    labels:
{labels}
{extra}"""


# --- helpers ------------------------------------------------------------------------------


def write_desired(lab: Path, versions: str, labels: dict[str, int], extra: str = "") -> None:
    text = LAB_YAML.format(
        versions=versions,
        labels="\n".join(f"      {k}: {v}" for k, v in labels.items()),
        extra=extra,
    )
    (lab / "desired_state" / "animals.yaml").write_text(text)


LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


def add_version(lab: Path, number: int, source: int = 3) -> Path:
    """Copy version `source` to `number` under a hidden name, then rename it into place."""
    base = lab / "models" / MODEL
    hidden = base / f".{number}.tmp"
    shutil.copytree(base / str(source), hidden)
    final = base / str(number)
    hidden.rename(final)
    return final


def corrupt(version_dir: Path) -> None:
    (version_dir / "saved_model.pb").write_bytes(os.urandom(2048))


def config_text(lab: Path) -> bytes:
    return (lab / "models" / "models.config").read_bytes()


@dataclass
class Cli:
    lab: Path
    rest_url: str
    grpc_target: str

    def __call__(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tfs-reconciler", *args],
            cwd=self.lab,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command in the background (stdout and stderr piped)."""
        return subprocess.Popen(
            ["tfs-reconciler", *args],
            cwd=self.lab,
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _env(self) -> dict[str, str]:
        env = dict(
            os.environ,
            TFS_RECONCILER_REST_URL=self.rest_url,
            TFS_RECONCILER_GRPC_TARGET=self.grpc_target,
            TFS_RECONCILER_MODELS_DIR=str(self.lab / "models"),
            TFS_RECONCILER_DESIRED=str(self.lab / "desired_state"),
        )
        for name in ("TFS_RECONCILER_RELOAD", "TFS_RECONCILER_TIMEOUT", "TFS_RECONCILER_CONFIG"):
            env.pop(name, None)
        return env


def post(rest_url: str, path: str, body: bytes) -> tuple[int, Any]:
    return request(rest_url, "POST", path, body)


def get(rest_url: str, path: str) -> tuple[int, Any]:
    return request(rest_url, "GET", path)


def predictions(rest_url: str, route: str) -> Any:
    status, body = post(rest_url, f"/v1/models/{MODEL}/{route}:predict", DOG_EXAMPLE.read_bytes())
    assert status == 200, body
    return body["predictions"]


def states(rest_url: str) -> dict[int, str]:
    """The newest state of each version (END entries stay listed)."""
    _, body = get(rest_url, f"/v1/models/{MODEL}")
    found: dict[int, str] = {}
    for entry in body["model_version_status"]:
        number = int(entry["version"])
        if found.get(number) in (None, "END"):
            found[number] = entry["state"]
    return found


def label_stream(rest_url: str, label: str, **options: Any) -> traffic.PredictStream:
    """The dog example, POSTed steadily to `label` of the lab's model."""
    return traffic.PredictStream(rest_url, MODEL, DOG_EXAMPLE.read_bytes(), label=label, **options)


StartSim = Callable[..., SimulatorProcess]


@pytest.fixture
def start_sim(lab: Path) -> Iterator[StartSim]:
    """`start_sim(**SimulatorProcess options)` on the lab's models; stopped after the test."""
    started: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        options.setdefault("load_seconds", LOAD)
        sim = SimulatorProcess(lab / "models", **options).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def cli_for(lab: Path, sim: SimulatorProcess) -> Cli:
    return Cli(lab, sim.rest_url, sim.grpc_target)


def reload_requests(sim: SimulatorProcess) -> int:
    return sim.log.count("reload_request")


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# --- the lab's promotion ----------------------------------------------------------------


@pytest.mark.parametrize("reload", ["grpc", "poll"])
def test_promotion_of_canary_to_stable_drops_no_request(
    lab: Path, start_sim: StartSim, reload: str
) -> None:
    sim = start_sim(poll_seconds=0.3 if reload == "poll" else 0.0)
    cli = cli_for(lab, sim)
    v2, v3 = predictions(sim.rest_url, "versions/2"), predictions(sim.rest_url, "versions/3")
    assert v2 != v3
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})

    with label_stream(sim.rest_url, "stable") as stream:
        result = cli("apply", "--reload", reload, "--timeout", "20")

    assert result.returncode == 0, output(result)
    assert "label stable 2 -> 3" in result.stdout
    assert stream.failures == [], f"{len(stream.failures)} of {stream.total} failed"
    assert stream.total > 10
    assert all(answer in (v2, v3) for answer in stream.answers)
    assert stream.answers[0] == v2 and stream.answers[-1] == v3
    assert label_version(sim.rest_url, MODEL, "stable") == 3
    assert states(sim.rest_url) == {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE"}
    if reload == "grpc":
        assert reload_requests(sim) == 1
    assert "FAILED_PRECONDITION" not in sim.log


def test_second_apply_with_nothing_to_do_neither_writes_nor_reloads(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})
    first = cli("apply", "--reload", "grpc")
    assert first.returncode == 0, output(first)
    config = lab / "models" / "models.config"
    before = config.stat().st_mtime_ns, config.read_bytes()
    reloads = reload_requests(sim)
    time.sleep(0.05)

    second = cli("apply", "--reload", "grpc")

    assert second.returncode == 0, output(second)
    assert "No changes" in second.stdout
    assert (config.stat().st_mtime_ns, config.read_bytes()) == before
    assert reload_requests(sim) == reloads


def test_the_lab_as_it_is_is_a_noop_and_its_hand_written_config_is_not_rewritten(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    config = lab / "models" / "models.config"
    before = config.stat().st_mtime_ns, config.read_bytes()
    result = cli_for(lab, sim)("apply", "--reload", "grpc")
    assert result.returncode == 0, output(result)
    assert "No changes" in result.stdout
    assert (config.stat().st_mtime_ns, config.read_bytes()) == before
    assert reload_requests(sim) == 0


# --- a new version on disk --------------------------------------------------------------


def test_a_version_appearing_on_disk_is_loaded_before_canary_moves_to_it(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=1.0"])
    cli = cli_for(lab, sim)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4})
    v2 = predictions(sim.rest_url, "versions/2")

    with (
        label_stream(sim.rest_url, "canary") as canary,
        label_stream(sim.rest_url, "stable") as stable,
    ):
        result = cli("apply", "--reload", "grpc", "--timeout", "20")

    assert result.returncode == 0, output(result)
    assert "load version 4" in result.stdout and "label canary 3 -> 4" in result.stdout
    # Phase 1 loads 4 keeping the labels; phase 2 moves canary once 4 is AVAILABLE.
    assert reload_requests(sim) == 2
    assert "FAILED_PRECONDITION" not in sim.log
    assert "reload_refused" not in sim.log
    assert canary.failures == [] and stable.failures == []
    assert all(answer == v2 for answer in stable.answers)
    assert label_version(sim.rest_url, MODEL, "canary") == 4
    assert states(sim.rest_url)[4] == "AVAILABLE"


@pytest.mark.parametrize("reload", ["grpc", "poll"])
def test_a_three_phase_promotion_drops_no_request(
    lab: Path, start_sim: StartSim, reload: str
) -> None:
    """Load 4, move stable and canary to it, unload 2 (stable's old version): 0 failures."""
    sim = start_sim(poll_seconds=0.3 if reload == "poll" else 0.0)
    add_version(lab, 4)
    write_desired(lab, "[1, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 4})
    with (
        label_stream(sim.rest_url, "stable") as stable,
        label_stream(sim.rest_url, "canary") as canary,
    ):
        result = cli_for(lab, sim)("apply", "--reload", reload, "--timeout", "20")
    assert result.returncode == 0, output(result)
    assert "3 phase(s) applied" in result.stdout
    assert stable.failures == [] and canary.failures == []
    assert states(sim.rest_url) == {1: "AVAILABLE", 2: "END", 3: "AVAILABLE", 4: "AVAILABLE"}
    assert label_version(sim.rest_url, MODEL, "stable") == 4
    assert "FAILED_PRECONDITION" not in sim.log


def test_ctrl_c_finishes_the_phase_in_flight_records_it_and_a_second_apply_finishes(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=1.5"])
    cli = cli_for(lab, sim)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4})
    apply = cli.start("apply", "--reload", "grpc", "--timeout", "20")
    wait_until(lambda: "reload_request" in sim.log, 10)  # phase 1 (load 4) pushed
    apply.send_signal(signal.SIGINT)
    out, err = apply.communicate(timeout=30)

    assert apply.returncode == 130, f"{out}\n{err}"
    assert "SIGINT: finishing the phase in flight, then stopping" in err
    assert "interrupted after phase 1 of 2" in err
    assert states(sim.rest_url)[4] == "AVAILABLE"  # the phase in flight finished...
    assert label_version(sim.rest_url, MODEL, "canary") == 3  # ...and the next never started
    records = json.loads(cli("history", "--output", "json").stdout)
    assert [r["outcome"] for r in records] == ["interrupted"]
    assert records[-1]["config"] == config_text(lab).decode()

    again = cli("apply", "--reload", "grpc", "--timeout", "20")
    assert again.returncode == 0, output(again)
    assert "label canary 3 -> 4" in again.stdout and "load version" not in again.stdout
    assert label_version(sim.rest_url, MODEL, "canary") == 4


def test_a_second_ctrl_c_stops_at_once(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=30"])
    cli = cli_for(lab, sim)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4})
    apply = cli.start("apply", "--reload", "grpc", "--timeout", "60")
    wait_until(lambda: "reload_request" in sim.log, 10)
    apply.send_signal(signal.SIGINT)
    assert apply.stderr is not None
    lines = iter(apply.stderr.readline, "")
    assert any("finishing the phase in flight" in line for line in lines)
    apply.send_signal(signal.SIGINT)
    out, err = apply.communicate(timeout=10)  # not the 30 s load
    assert apply.returncode == 130, f"{out}\n{err}"
    assert "Traceback" not in err and "interrupted: what was written is recorded" in err
    # What it wrote is in the history, so a rollback undoes it (and nothing before it).
    (record,) = json.loads(cli("history", "--output", "json").stdout)
    assert record["outcome"] == "interrupted" and record["config"] == config_text(lab).decode()
    assert record["message"].startswith("stopped at once by a second interrupt")


def test_apply_and_rollback_are_refused_while_another_writer_holds_the_config(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    write_desired(lab, "[1, 2, 3]", LAB_LABELS | {"canary": 2})
    assert cli("apply", "--reload", "grpc").returncode == 0  # history record 1
    write_desired(lab, "[1, 2, 3]", LAB_LABELS | {"stable": 3})
    before, pushes = config_text(lab), reload_requests(sim)
    with acquire(lab / "models" / "models.config", "daemon"):  # as a running daemon does
        for command in (["apply", "--reload", "grpc"], ["rollback", "--reload", "grpc"]):
            result = cli(*command)
            assert result.returncode == 1, output(result)
            assert f"another tfs-reconciler (daemon, pid {os.getpid()}) is changing" in (
                result.stderr
            ), output(result)
    assert config_text(lab) == before
    assert reload_requests(sim) == pushes
    assert cli("apply", "--reload", "grpc").returncode == 0
    assert label_version(sim.rest_url, MODEL, "stable") == 3


def test_a_new_label_on_a_new_version_is_set_only_once_it_is_available(
    lab: Path, start_sim: StartSim
) -> None:
    """TFS (with the lab's --allow_version_labels_for_unavailable_models) would accept a new
    label on a loading version, and requests by it would fail with 404 until it loads."""
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=1.0"])
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", LAB_LABELS | {"beta": 4})
    with label_stream(sim.rest_url, "beta") as beta:
        result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "20")
    assert result.returncode == 0, output(result)
    assert beta.answers, "the label never answered"
    # Before the label exists TFS answers 400 (unknown label); it must never answer 404.
    others = [f for f in beta.failures if "Unrecognized servable version label" not in f]
    assert others == []
    assert label_version(sim.rest_url, MODEL, "beta") == 4


def test_the_label_moves_only_once_the_new_version_has_loaded(
    lab: Path, start_sim: StartSim
) -> None:
    """The wait is real: apply returns after the load, with the label on the new version.
    How long past the load it takes is a benchmark figure (`python -m bench --only latency`),
    not asserted here."""
    load = 1.0
    sim = start_sim(extra_args=[f"--sim_load_seconds_for=animals:4={load}"])
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 4})
    result = cli_for(lab, sim)("apply", "--reload", "grpc")
    assert result.returncode == 0, output(result)
    converged = float(re.search(r"applied in ([0-9.]+) s", result.stdout)[1])  # type: ignore[index]
    assert converged >= load
    assert label_version(sim.rest_url, MODEL, "stable") == 4
    assert states(sim.rest_url)[4] == "AVAILABLE"


# --- failures roll back -----------------------------------------------------------------


def test_a_corrupt_version_is_rolled_back_with_the_old_labels_serving_throughout(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim(extra_args=["--max_num_load_retries=0"])
    cli = cli_for(lab, sim)
    corrupt(add_version(lab, 4))
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3})
    v2 = predictions(sim.rest_url, "versions/2")

    with label_stream(sim.rest_url, "stable") as stream:
        result = cli("apply", "--reload", "grpc", "--timeout", "20")

    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr
    assert "version 4 failed to load" in result.stderr
    assert "DATA_LOSS" in result.stderr
    assert "serving now: animals versions 1, 2, 3" in result.stderr
    assert "stable=2" in result.stderr
    assert stream.failures == [], f"{len(stream.failures)} of {stream.total} failed"
    assert stream.total > 5 and all(answer == v2 for answer in stream.answers)
    assert label_version(sim.rest_url, MODEL, "stable") == 2
    assert config_text(lab) == original
    assert "FAILED_PRECONDITION" not in sim.log


def test_a_corrupt_version_is_rolled_back_with_reload_poll(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim(poll_seconds=0.3, extra_args=["--max_num_load_retries=0"])
    corrupt(add_version(lab, 4))
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3})
    with label_stream(sim.rest_url, "stable") as stream:
        result = cli_for(lab, sim)("apply", "--reload", "poll", "--timeout", "20")
    assert result.returncode == 1, output(result)
    assert "version 4 failed to load" in result.stderr
    assert stream.failures == []
    assert config_text(lab) == original
    assert label_version(sim.rest_url, MODEL, "stable") == 2


def test_a_timeout_rolls_back(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=5"])
    add_version(lab, 4)
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3})
    v2 = predictions(sim.rest_url, "versions/2")
    with label_stream(sim.rest_url, "stable") as stream:
        started = time.monotonic()
        result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "1")
        elapsed = time.monotonic() - started
    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr
    assert "timed out" in result.stderr
    assert "Rolled back" in result.stderr, output(result)
    assert config_text(lab) == original
    assert stream.failures == [] and all(answer == v2 for answer in stream.answers)
    assert label_version(sim.rest_url, MODEL, "stable") == 2
    print(f"\n--timeout 1 with a 5 s load: exit 1 after {elapsed:.2f} s")


# --- verification -----------------------------------------------------------------------


def with_smaller_input(version_dir: Path) -> None:
    """The SavedModel's serving_default takes 4x4 images: the dog example (8x8) no longer fits."""
    from reconciler.testing.tfs_sim.savedmodel import _SAVED_MODEL

    path = version_dir / "saved_model.pb"
    proto: Any = _SAVED_MODEL()
    proto.ParseFromString(path.read_bytes())
    for graph in proto.meta_graphs:
        dims = graph.signature_def["serving_default"].inputs["input_image"].tensor_shape.dim
        dims[1].size = dims[2].size = 4
    path.write_bytes(proto.SerializeToString())


VERIFY = "    verify:\n      request: dog_example.json\n"


def test_a_version_whose_signature_the_request_does_not_fit_is_rolled_back(
    lab: Path, start_sim: StartSim
) -> None:
    """Version 4 is not loaded when the apply starts, so its signature is known only once it
    loads: the request is checked against it (metadata over REST) before it is sent."""
    sim = start_sim()
    shutil.copy(DOG_EXAMPLE, lab / "desired_state" / "dog_example.json")
    with_smaller_input(add_version(lab, 4))
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3}, VERIFY)
    v2 = predictions(sim.rest_url, "versions/2")

    with label_stream(sim.rest_url, "stable") as stream:
        result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "20")

    assert result.returncode == 1, output(result)
    assert "verification of animals version 4" in result.stderr
    assert "does not fit its signature: input input_image: shape [1, 8, 8, 3]" in result.stderr
    assert "Rolled back" in result.stderr
    assert config_text(lab) == original
    assert stream.failures == [] and all(answer == v2 for answer in stream.answers)
    assert label_version(sim.rest_url, MODEL, "stable") == 2


def test_a_version_that_answers_well_passes_verification(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim()
    shutil.copy(DOG_EXAMPLE, lab / "desired_state" / "dog_example.json")
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 4}, VERIFY)
    result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "20")
    assert result.returncode == 0, output(result)
    assert re.search(r"predict model=animals version=4 via=version:4", sim.log)
    assert label_version(sim.rest_url, MODEL, "stable") == 4


def test_reload_none_refuses_a_label_on_a_version_tfs_has_not_loaded(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim(poll_seconds=0.2)  # TFS reads the file on its own
    add_version(lab, 4)
    before = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3})
    result = cli_for(lab, sim)("apply")  # --reload none, apply's default
    assert result.returncode == 1, output(result)
    assert "animals: label stable -> 4 needs the version AVAILABLE first" in result.stderr
    assert config_text(lab) == before

    # The way it names: load 4 in one apply, move the label in the next.
    write_desired(lab, "[1, 2, 3, 4]", LAB_LABELS)
    assert cli_for(lab, sim)("apply").returncode == 0
    wait_until(lambda: states(sim.rest_url).get(4) == "AVAILABLE", 10)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3})
    assert cli_for(lab, sim)("apply").returncode == 0
    wait_until(lambda: label_version(sim.rest_url, MODEL, "stable") == 4, 10)
    assert "config_file_not_applied" not in sim.log


def test_a_base_path_change_that_would_drop_the_served_versions_is_refused(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    shutil.copytree(lab / "models" / MODEL / "3", lab / "models" / "zoo" / "4")
    before = config_text(lab)
    write_desired(lab, "[4]", {"stable": 4}, "    base_path: /models/zoo\n")
    result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "10")
    assert result.returncode == 1, output(result)
    assert "models.animals.base_path: base_path /models/animals/ -> /models/zoo:" in result.stderr
    assert "label(s) canary, deprecated, stable point at version(s) 1, 2, 3" in result.stderr
    assert config_text(lab) == before and reload_requests(sim) == 0

    # Once the served versions are in the new folder too, the move is made without a gap.
    for number in (1, 2, 3):
        shutil.copytree(lab / "models" / MODEL / str(number), lab / "models" / "zoo" / str(number))
    with label_stream(sim.rest_url, "stable") as stable:
        moved = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "20")
    assert moved.returncode == 0, output(moved)
    assert stable.failures == []
    assert label_version(sim.rest_url, MODEL, "stable") == 4


def test_a_base_path_move_drops_unlabelled_versions_left_behind_in_one_change(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    write_desired(lab, "[2, 3]", {"stable": 3})
    assert cli("apply", "--reload", "grpc", "--timeout", "20").returncode == 0
    for number in (3, 4):  # the new folder: 3 (labelled) and a new 4; not 2
        shutil.copytree(lab / "models" / MODEL / "3", lab / "models" / "zoo" / str(number))
    write_desired(lab, "[3, 4]", {"stable": 3, "canary": 4}, "    base_path: /models/zoo\n")
    with label_stream(sim.rest_url, "stable") as stable:
        moved = cli("apply", "--reload", "grpc", "--timeout", "20")
    assert moved.returncode == 0, output(moved)
    assert stable.failures == []
    assert label_version(sim.rest_url, MODEL, "canary") == 4
    assert states(sim.rest_url)[2] == "END"


def test_a_model_left_alone_whose_folder_was_deleted_is_refused_before_anything_is_written(
    lab: Path, start_sim: StartSim
) -> None:
    """One missing base_path stops TFS's file-system poll for every model
    (file_system_storage_path_source.cc PollFileSystemForConfig): refused, managed or not."""
    shutil.copytree(lab / "models" / MODEL, lab / "models" / "old")
    config = lab / "models" / "models.config"
    config.write_text(
        config.read_text().replace(
            "model_config_list {",
            "model_config_list {\n  config { name: 'old' base_path: '/models/old' "
            "model_platform: 'tensorflow' }",
        )
    )
    sim = start_sim()
    assert states(sim.rest_url)  # TFS serves both models
    shutil.rmtree(lab / "models" / "old")  # prune is false: 'old' is not ours to remove
    write_desired(lab, "[1, 2, 3]", LAB_LABELS | {"stable": 3})
    before = config_text(lab)
    result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "20")
    assert result.returncode == 1, output(result)
    assert "old: base_path /models/old: model folder" in result.stderr, output(result)
    assert "versions of every model" in result.stderr
    assert config_text(lab) == before and reload_requests(sim) == 0
    assert label_version(sim.rest_url, MODEL, "stable") == 2
    diff = cli_for(lab, sim)("diff")
    assert diff.returncode == 1 and "old: base_path /models/old" in output(diff)
    status = cli_for(lab, sim)("status")
    assert "old: base_path /models/old" in output(status), output(status)
    assert "versions of every model" in output(status)


def test_no_verify_skips_the_request(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim()
    shutil.copy(DOG_EXAMPLE, lab / "desired_state" / "dog_example.json")
    with_smaller_input(add_version(lab, 4))
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4}, VERIFY)
    result = cli_for(lab, sim)("apply", "--reload", "grpc", "--no-verify")
    assert result.returncode == 0, output(result)
    assert "via=version:4" not in sim.log


# --- TFS unreachable --------------------------------------------------------------------


def test_tfs_unreachable_over_grpc_is_a_clear_error_and_the_config_stays(lab: Path) -> None:
    rest_url, grpc_target = f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = lab / "models" / "models.config"
    before = config.stat().st_mtime_ns, config.read_bytes()
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})
    for reload in ("grpc", "poll", "auto"):
        result = Cli(lab, rest_url, grpc_target)("apply", "--reload", reload, "--timeout", "5")
        assert result.returncode == 1, output(result)
        assert "Traceback" not in result.stderr
        assert "error: TFS does not answer" in result.stderr, output(result)
        assert rest_url in result.stderr
        assert (config.stat().st_mtime_ns, config.read_bytes()) == before
        if reload == "auto":  # it says which way it fell back to
            assert '"event": "reload_auto"' in result.stderr and '"using": "poll"' in result.stderr


def test_grpc_port_closed_while_rest_answers_restores_the_config(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})
    closed = f"127.0.0.1:{free_port()}"
    result = Cli(lab, sim.rest_url, closed)("apply", "--reload", "grpc", "--timeout", "5")
    assert result.returncode == 1, output(result)
    assert "Traceback" not in result.stderr
    assert f"TFS gRPC at {closed}: UNAVAILABLE" in result.stderr
    assert config_text(lab) == original
    assert label_version(sim.rest_url, MODEL, "stable") == 2


# --- history and rollback ---------------------------------------------------------------


def test_history_records_applies_and_rollback_converges_back(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})
    assert cli("apply", "--reload", "grpc").returncode == 0
    after_first = config_text(lab)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 3, "canary": 4})
    second = cli("apply", "--reload", "grpc")
    assert second.returncode == 0, output(second)
    assert label_version(sim.rest_url, MODEL, "canary") == 4

    history = cli("history", "--output", "json")
    assert history.returncode == 0, output(history)
    records = json.loads(history.stdout)
    assert [r["outcome"] for r in records] == ["applied", "applied"]
    assert records[-1]["config"] == config_text(lab).decode()
    assert any("label canary 3 -> 4" in step for step in records[-1]["steps"])
    text = cli("history")
    assert "applied" in text.stdout and "label canary 3 -> 4" in text.stdout

    back = cli("rollback", "--reload", "grpc")

    assert back.returncode == 0, output(back)
    assert config_text(lab) == after_first
    assert label_version(sim.rest_url, MODEL, "canary") == 3
    assert states(sim.rest_url) == {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE", 4: "END"}
    assert "FAILED_PRECONDITION" not in sim.log
    assert back.stdout.startswith("Rolling back to the config record 2 replaced.\n")
    records = json.loads(cli("history", "--output", "json").stdout)
    assert len(records) == 3 and records[-1]["outcome"] == "applied"
    assert records[-1]["action"] == "rollback to the config record 2 replaced"
    assert "(rollback to the config record 2 replaced)" in cli("history").stdout

    # Rolling back again undoes the rollback, like `kubectl rollout undo`.
    again = cli("rollback", "--reload", "grpc")
    assert again.returncode == 0, output(again)
    assert label_version(sim.rest_url, MODEL, "canary") == 4


def test_rollback_after_a_single_apply_returns_to_the_config_before_it(
    lab: Path, start_sim: StartSim
) -> None:
    """Each record keeps the models.config it replaced, so the first apply can be undone."""
    sim = start_sim()
    cli = cli_for(lab, sim)
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})
    assert cli("apply", "--reload", "grpc").returncode == 0
    assert label_version(sim.rest_url, MODEL, "stable") == 3
    back = cli("rollback", "--reload", "grpc")
    assert back.returncode == 0, output(back)
    assert label_version(sim.rest_url, MODEL, "stable") == 2
    assert "FAILED_PRECONDITION" not in sim.log


def test_rollback_with_no_history_says_so_and_changes_nothing(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    before = config_text(lab)
    back = cli("rollback", "--reload", "grpc")
    assert back.returncode == 1, output(back)
    assert "error: no recorded change to roll back (history: " in back.stderr
    assert config_text(lab) == before


def test_an_interrupted_first_apply_can_be_rolled_back(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim(extra_args=["--sim_load_seconds_for=animals:4=1.5"])
    cli = cli_for(lab, sim)
    before = config_text(lab)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4})
    apply = cli.start("apply", "--reload", "grpc", "--timeout", "20")
    wait_until(lambda: "reload_request" in sim.log, 10)
    apply.send_signal(signal.SIGINT)
    apply.communicate(timeout=30)
    assert apply.returncode == 130
    back = cli("rollback", "--reload", "grpc")
    assert back.returncode == 0, output(back)
    assert config_text(lab) == before
    assert states(sim.rest_url)[4] == "END"


def test_rollback_to_a_numbered_record(lab: Path, start_sim: StartSim) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    for stable in (3, 1, 2):
        write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": stable, "canary": 3})
        assert cli("apply", "--reload", "grpc").returncode == 0
    back = cli("rollback", "1", "--reload", "grpc")
    assert back.returncode == 0, output(back)
    assert label_version(sim.rest_url, MODEL, "stable") == 3
    missing = cli("rollback", "99", "--reload", "grpc")
    assert missing.returncode == 1 and "no record 99" in missing.stderr


@pytest.mark.parametrize("reload", ["grpc", "poll"])
def test_applying_the_same_broken_version_again_fails_fast_not_by_timeout(
    lab: Path, start_sim: StartSim, reload: str
) -> None:
    """TFS keeps the first failure listed; the second attempt's identical failure is new."""
    sim = start_sim(
        poll_seconds=0.3 if reload == "poll" else 0.0, extra_args=["--max_num_load_retries=0"]
    )
    cli = cli_for(lab, sim)
    corrupt(add_version(lab, 4))
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 4, "canary": 3})
    first = cli("apply", "--reload", reload, "--timeout", "20")
    assert first.returncode == 1 and "version 4 failed to load" in first.stderr, output(first)
    started = time.monotonic()
    second = cli("apply", "--reload", reload, "--timeout", "20")
    elapsed = time.monotonic() - started
    assert second.returncode == 1, output(second)
    assert "version 4 failed to load" in second.stderr, output(second)
    assert elapsed < 10, f"took {elapsed:.1f} s: waited for the timeout"
    assert label_version(sim.rest_url, MODEL, "stable") == 2


def test_rollback_to_a_config_whose_version_is_gone_from_disk_is_refused(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", {"deprecated": 1, "stable": 2, "canary": 4})
    assert cli("apply", "--reload", "grpc").returncode == 0
    write_desired(lab, "[1, 2, 3]", LAB_LABELS)
    assert cli("apply", "--reload", "grpc").returncode == 0
    shutil.rmtree(lab / "models" / MODEL / "4")
    before = config_text(lab)
    reloads = reload_requests(sim)
    started = time.monotonic()
    back = cli("rollback", "1", "--reload", "grpc", "--timeout", "20")
    assert back.returncode == 1, output(back)
    assert time.monotonic() - started < 10
    assert "version 4 is not on disk" in back.stderr, output(back)
    assert config_text(lab) == before and reload_requests(sim) == reloads


def test_history_records_the_commit_of_the_desired_state_and_whether_it_was_dirty(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    cli = cli_for(lab, sim)
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )

    git = functools.partial(lab_git, lab, env=env)

    git("init", "-q", "-b", "main")
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 3})
    git("add", "desired_state")
    git("commit", "-q", "-m", "promote")
    assert cli("apply", "--reload", "grpc").returncode == 0
    write_desired(lab, "[1, 2, 3]", {"deprecated": 1, "stable": 3, "canary": 2})
    assert cli("apply", "--reload", "grpc").returncode == 0

    records = json.loads(cli("history", "--output", "json").stdout)
    head = git("rev-parse", "HEAD")
    assert [(r["commit"], r["dirty"]) for r in records] == [(head, False), (head, True)]
    assert head[:12] in cli("history").stdout


def test_adding_a_model_that_loads_longer_than_the_push_deadline_converges(
    lab: Path, start_sim: StartSim
) -> None:
    """TFS answers a push that adds a model only once the model loaded: the push may take as
    long as --timeout allows, not the reloader's minimum deadline (here 1 s, for a 3 s load)."""
    from reconciler.desired_files import load_desired
    from reconciler.reconcile import Revision, reconcile
    from reconciler.reload import GrpcReloader
    from reconciler.settings import Settings
    from reconciler.tfs_grpc import TfsGrpc

    sim = start_sim(extra_args=["--sim_load_seconds_for=iris=3"])
    shutil.copytree(lab / "models" / MODEL, lab / "models" / "iris")
    (lab / "desired_state" / "iris.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  iris:\n    versions: [1]\n"
    )
    settings = Settings(
        desired=lab / "desired_state",
        models_dir=lab / "models",
        rest_url=sim.rest_url,
        grpc_target=sim.grpc_target,
        timeout=20,
    )
    with TfsGrpc(sim.grpc_target) as client:
        reloader = GrpcReloader(client, deadline=1.0)
        _, outcome, _ = reconcile(
            load_desired(lab / "desired_state"),
            settings=settings,
            reloader=reloader,
            revision=Revision(),
        )
    assert outcome.result == "applied", outcome.message
    _, body = get(sim.rest_url, "/v1/models/iris")
    assert body["model_version_status"][0]["state"] == "AVAILABLE"


# --- real TFS semantics (issue 9): disk discovery at the file-system poll ---------------------


def test_with_a_5_s_file_system_poll_the_new_version_loads_and_the_label_moves(
    lab: Path, start_sim: StartSim
) -> None:
    """TFS acts on a version added by a reload only at its next file-system poll
    (file_system_storage_path_source.cc UpdateConfig does not scan the disk)."""
    sim = start_sim(file_system_poll_seconds=5)
    add_version(lab, 4)
    write_desired(lab, "[1, 2, 3, 4]", LAB_LABELS | {"canary": 4})
    result = cli_for(lab, sim)(
        "apply", "--reload", "grpc", "--timeout", "60", "--file-system-poll-seconds", "5"
    )
    assert result.returncode == 0, output(result)
    assert label_version(sim.rest_url, MODEL, "canary") == 4


def test_tfs_that_never_polls_its_disk_is_named_as_the_cause_well_before_the_timeout(
    lab: Path, start_sim: StartSim
) -> None:
    """--file_system_poll_wait_seconds=0: TFS polls the disk once, at start; a version added
    later by a reload is never listed. The apply (told TFS polls every 1 s) gives up after a
    few periods, rolls back and says why, instead of waiting out --timeout."""
    sim = start_sim(file_system_poll_seconds=0)
    add_version(lab, 4)
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", LAB_LABELS | {"canary": 4})
    started = time.monotonic()
    result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "300", timeout=250)
    assert result.returncode == 1, output(result)
    assert time.monotonic() - started < 200  # not the 300 s --timeout (a generous bound)
    assert "animals version 4 is not listed yet" in result.stderr, output(result)
    assert "--file_system_poll_wait_seconds 0" in result.stderr
    assert "Rolled back" in result.stderr
    assert config_text(lab) == original
    assert label_version(sim.rest_url, MODEL, "canary") == 3


def test_a_verify_request_that_does_not_fit_the_signature_is_rejected_at_validate(
    lab: Path, start_sim: StartSim
) -> None:
    sim = start_sim()
    body = json.loads(DOG_EXAMPLE.read_text())
    (lab / "desired_state" / "wrong.json").write_text(
        json.dumps({"instances": [{"image": body["instances"][0]}]})
    )
    write_desired(
        lab, "[1, 2, 3]", LAB_LABELS | {"stable": 3}, "    verify:\n      request: wrong.json\n"
    )
    cli = cli_for(lab, sim)
    result = cli("validate", "--rest-url", sim.rest_url)
    assert result.returncode == 1, output(result)
    assert re.search(r"animals\.yaml:\d+:\d+: models\.animals\.verify\.request: ", result.stderr)
    assert "does not have named input: input_image" in result.stderr, output(result)
    diff = cli("diff")
    assert diff.returncode == 1, output(diff)
    assert re.search(r"animals\.yaml:\d+:\d+: models\.animals\.verify\.request: ", output(diff))
    assert "does not have named input: input_image" in output(diff)
    before = config_text(lab)
    applied = cli("apply", "--reload", "grpc", "--timeout", "20")
    assert applied.returncode == 1 and "does not have named input" in applied.stderr
    assert config_text(lab) == before and reload_requests(sim) == 0


def test_a_reload_that_failed_with_the_new_config_in_force_is_rolled_back_from_what_serves(
    lab: Path, start_sim: StartSim
) -> None:
    """ServerCore::ReloadConfig sets config_ and the labels before it adds models, then waits
    for each new model's highest version: when that fails the reload answers UNKNOWN "... did
    not become available" with the new config in force (lower versions load). The rollback
    reads what serves and undoes it: iris leaves, animals serves as before."""
    sim = start_sim(extra_args=["--sim_load_fail_for=iris:2", "--max_num_load_retries=0"])
    shutil.copytree(lab / "models" / MODEL, lab / "models" / "iris")
    shutil.rmtree(lab / "models" / "iris" / "3")
    (lab / "desired_state" / "iris.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  iris:\n    versions: [1, 2]\n"
    )
    add_version(lab, 4)
    original = config_text(lab)
    write_desired(lab, "[1, 2, 3, 4]", LAB_LABELS | {"canary": 4})
    with label_stream(sim.rest_url, "stable") as stream:
        result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "60", timeout=90)
    assert result.returncode == 1, output(result)
    assert "did not become available" in result.stderr, output(result)
    assert "Rolled back" in result.stderr
    assert config_text(lab) == original
    assert stream.failures == []
    assert label_version(sim.rest_url, MODEL, "canary") == 3
    wait_until(
        lambda: (
            get(sim.rest_url, "/v1/models/iris")[0] == 404
            or all(
                v["state"] == "END"
                for v in get(sim.rest_url, "/v1/models/iris")[1]["model_version_status"]
            )
        ),
        timeout=30,
    )


def test_a_new_model_on_tfs_that_never_polls_is_given_up_on_well_before_the_timeout(
    lab: Path, start_sim: StartSim
) -> None:
    """ServerCore::ReloadConfig waits for a new model's highest version, which only a
    file-system poll finds: with --file_system_poll_wait_seconds=0 the push never returns.
    The apply gives up on it after a few periods and names the cause."""
    sim = start_sim(file_system_poll_seconds=0)
    shutil.copytree(lab / "models" / MODEL, lab / "models" / "iris")
    (lab / "desired_state" / "iris.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  iris:\n    versions: [1]\n"
    )
    original = config_text(lab)
    started = time.monotonic()
    result = cli_for(lab, sim)("apply", "--reload", "grpc", "--timeout", "300", timeout=250)
    assert result.returncode == 1, output(result)
    assert "iris has no version listed" in result.stderr, output(result)
    assert "--file_system_poll_wait_seconds 0" in result.stderr
    assert "nothing was pushed back" in result.stderr
    assert time.monotonic() - started < 200  # not the 300 s --timeout (a generous bound)
    assert config_text(lab) == original
    assert label_version(sim.rest_url, MODEL, "stable") == 2
