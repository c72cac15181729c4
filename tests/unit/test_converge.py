"""Converger on the lab's files, with an in-memory TFS, reloader and clock (no processes):
reconciler.testing.fakes' FakeTfs, FakeReloader and FakeClock."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

import reconciler.reload as reload_module
from reconciler.config_store import ConfigStore, FileConfigStore
from reconciler.converge import Converger, Outcome, Target
from reconciler.desired import DesiredState
from reconciler.desired_files import load_desired
from reconciler.docker_target import DockerError
from reconciler.observe import Observed, TfsUnreachable, observe
from reconciler.plan import Plan, plan
from reconciler.preflight import describe_serving
from reconciler.reload import NoReload, ReloadFailed, ReloadMode, RestartReloader
from reconciler.testing.fakes import FakeClock, FakeReloader, FakeTfs
from reconciler.tfs_config import ServingConfig
from reconciler.tfs_grpc import ReloadAbandoned, ReloadRejected
from reconciler.verify import VerifyFailed

MODEL = "animals"


@dataclass(frozen=True)
class FailingWrites(FileConfigStore):
    """The lab's models.config, where write number n (from 1) raises `fail(n)` if not None."""

    fail: Callable[[int], OSError | None] = lambda n: None
    texts: list[str] = field(default_factory=list)

    def write(self, text: str) -> bool:
        self.texts.append(text)
        error = self.fail(len(self.texts))
        if error is not None:
            raise error
        return super().write(text)


@dataclass
class Bed:
    lab: Path
    clock: FakeClock
    tfs: FakeTfs
    reloader: FakeReloader
    store: ConfigStore | None = None  # None: the lab's models.config

    @property
    def config_path(self) -> Path:
        return self.lab / "models" / "models.config"

    def failing_writes(self, fail: Callable[[int], OSError | None]) -> FailingWrites:
        return FailingWrites(self.config_path, self.lab / "state", fail)

    def desire(self, versions: str, labels: dict[str, int], extra: str = "") -> DesiredState:
        lines = "\n".join(f"      {k}: {v}" for k, v in labels.items())
        (self.lab / "desired_state" / "animals.yaml").write_text(
            "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n"
            f"    versions: {versions}\n    labels:\n{lines}\n{extra}"
        )
        return load_desired(self.lab / "desired_state")

    def observed(self, desired: DesiredState) -> Observed:
        return observe(
            {m.name: m.base_path for m in desired.models},
            {m.name: [label for label, _ in m.labels] for m in desired.models},
            models_dir=self.lab / "models",
            serving_root="/models",
            config_path=self.config_path,
            live_source=self.tfs,
        )

    def add_version(self, number: int) -> None:
        import shutil

        base = self.lab / "models" / MODEL
        shutil.copytree(base / "3", base / f".{number}")
        (base / f".{number}").rename(base / str(number))

    def converge(
        self, desired: DesiredState, reloader: object | None = None, **options: object
    ) -> tuple[Plan, Outcome]:
        observed = self.observed(desired)
        the_plan = plan(desired, observed)
        store = self.store or FileConfigStore(self.config_path, self.lab / "state")
        converger = Converger(
            Target(self.tfs, store, reloader or self.reloader),  # type: ignore[arg-type]
            clock=self.clock,
            sleep=self.clock.sleep,
            **options,  # type: ignore[arg-type]
        )
        return the_plan, converger.apply(the_plan, observed.disk, desired)


@pytest.fixture
def bed(lab: Path) -> Bed:
    clock = FakeClock()
    tfs = FakeTfs(clock, lab / "models")
    return Bed(lab, clock, tfs, FakeReloader(tfs))


LAB_LABELS = {"deprecated": 1, "stable": 2, "canary": 3}


def test_the_lab_promotion_is_one_label_move(bed: Bed) -> None:
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}))
    assert outcome.result == "applied" and outcome.phases == 1
    assert len(bed.reloader.pushed) == 1
    assert bed.tfs.labels["stable"] == 3
    assert bed.tfs.label_log == [("stable", 3, "AVAILABLE")]
    assert "value: 3" in bed.config_path.read_text()


def test_a_new_version_loads_before_a_label_moves_to_it(bed: Bed) -> None:
    bed.add_version(4)
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}))
    assert outcome.result == "applied", outcome.message
    assert outcome.phases == 2
    load, relabel = bed.reloader.pushed
    assert dict(load.models[0].labels) == LAB_LABELS  # labels kept while 4 loads
    assert dict(relabel.models[0].labels)["canary"] == 4
    assert bed.tfs.label_log == [("canary", 4, "AVAILABLE")]
    assert bed.clock() == pytest.approx(bed.tfs.load, abs=0.1)  # waited the load, no more


def test_an_interrupt_stops_before_the_next_phase_leaving_the_finished_one(bed: Bed) -> None:
    bed.add_version(4)
    asked = iter([False, True])  # checked before phase 1, then before phase 2
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}), interrupted=lambda: next(asked)
    )
    assert (outcome.result, outcome.phases) == ("interrupted", 1), outcome.message
    assert "interrupted after phase 1 of 2" in outcome.message
    assert len(bed.reloader.pushed) == 1
    assert bed.tfs.state(4) == "AVAILABLE" and bed.tfs.labels == LAB_LABELS
    assert outcome.config == bed.config_path.read_text()
    assert "versions: 4" in outcome.config and "value: 3" in outcome.config


def test_an_interrupt_before_the_first_phase_changes_nothing(bed: Bed) -> None:
    original = bed.config_path.read_bytes()
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}), interrupted=lambda: True
    )
    assert (outcome.result, outcome.phases) == ("interrupted", 0)
    assert "interrupted before anything was changed" in outcome.message
    assert bed.reloader.pushed == [] and bed.config_path.read_bytes() == original


def test_removing_a_labelled_version_moves_the_label_first_then_unloads(bed: Bed) -> None:
    _, outcome = bed.converge(bed.desire("[2, 3]", {"stable": 3, "canary": 3}))
    assert outcome.result == "applied", outcome.message
    assert bed.tfs.state(1) == "END" and "deprecated" not in bed.tfs.labels
    assert all(state == "AVAILABLE" for _, _, state in bed.tfs.label_log)


def test_a_broken_version_is_rolled_back_and_the_file_restored(bed: Bed) -> None:
    original = bed.config_path.read_bytes()
    bed.add_version(4)
    bed.tfs.broken.add(4)
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}))
    assert outcome.result == "rolled_back"
    assert "animals version 4 failed to load: DATA_LOSS: version 4 is broken" in outcome.message
    assert "serving now: animals versions 1, 2, 3" in outcome.message
    assert bed.config_path.read_bytes() == original
    assert bed.tfs.labels == LAB_LABELS
    assert ("stable", 4, "AVAILABLE") not in bed.tfs.label_log
    assert (bed.lab / "state" / "last-known-good.config").read_bytes() == original


def test_a_timeout_rolls_back(bed: Bed) -> None:
    bed.add_version(4)
    bed.tfs.load = 50.0
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}), timeout=5.0)
    assert outcome.result == "rolled_back", outcome.message
    assert outcome.message.startswith("timed out after 3.34 s of the 5 s --timeout")
    assert "animals version 4 is LOADING" in outcome.message
    assert "loading animals version 4; 1 version(s) left to load" in outcome.message
    assert bed.tfs.labels == LAB_LABELS


def test_the_timeout_bounds_the_whole_command_rollback_included_against_a_hanging_tfs(
    bed: Bed,
) -> None:
    """Issue 10: --timeout 10 returned after 26 s against a TFS that hangs mid-apply, since
    each push had a 30 s floor and the rollback waited a full timeout of its own."""
    bed.add_version(4)

    def hang(config: ServingConfig, timeout: float | None = None) -> None:
        bed.clock.now += timeout if timeout is not None else 1000.0  # until its deadline
        raise ReloadRejected("DEADLINE_EXCEEDED", "Deadline Exceeded")

    hanging = type("Hanging", (), {"reload": staticmethod(hang)})()
    reloader = reload_module.GrpcReloader(client=hanging)
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}), reloader, timeout=10.0
    )
    assert outcome.result in ("rolled_back", "failed"), outcome.message
    assert bed.clock() <= 10.0 + reload_module.MIN_STEP_SECONDS


def test_failed_verification_moves_no_label_and_rolls_back(bed: Bed) -> None:
    (bed.lab / "desired_state" / "dog.json").write_text('{"instances": [1]}')
    bed.add_version(4)
    asked: list[tuple[str, int, str]] = []

    def verifier(model: str, version: int, request: str) -> None:
        asked.append((model, version, Path(request).name))
        assert bed.tfs.state(version) == "AVAILABLE"  # verified once loaded, before labels
        raise VerifyFailed(f"verification of {model} version {version}: HTTP 400: bad")

    desired = bed.desire(
        "[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}, "    verify:\n      request: dog.json\n"
    )
    _, outcome = bed.converge(desired, verifier=verifier)
    assert asked == [("animals", 4, "dog.json")]
    assert outcome.result == "rolled_back"
    assert "verification of animals version 4: HTTP 400: bad" in outcome.message
    assert bed.tfs.labels == LAB_LABELS and bed.tfs.label_log == []


def test_a_version_already_served_is_not_verified(bed: Bed) -> None:
    (bed.lab / "desired_state" / "dog.json").write_text('{"instances": [1]}')
    asked: list[int] = []
    desired = bed.desire(
        "[1, 2, 3]", LAB_LABELS | {"stable": 3}, "    verify:\n      request: dog.json\n"
    )
    _, outcome = bed.converge(desired, verifier=lambda m, v, f: asked.append(v))
    assert outcome.result == "applied" and asked == []


def test_nothing_to_do_writes_and_reloads_nothing(bed: Bed) -> None:
    before = bed.config_path.stat().st_mtime_ns
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS))
    assert outcome.result == "noop"
    assert bed.reloader.pushed == []
    assert bed.config_path.stat().st_mtime_ns == before


def test_a_refused_push_rolls_back(bed: Bed) -> None:
    bed.add_version(4)

    def refuse(config: ServingConfig, timeout: float | None = None) -> None:
        bed.reloader.pushed.append(config)
        if len(bed.reloader.pushed) == 1:
            raise ReloadRejected("INVALID_ARGUMENT", "no")
        bed.tfs.take(config)

    bed.reloader.reload = refuse  # type: ignore[method-assign]
    original = bed.config_path.read_bytes()
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}))
    assert outcome.result == "rolled_back"
    assert "TFS refused the config (INVALID_ARGUMENT): no" in outcome.message
    assert bed.config_path.read_bytes() == original


def test_tfs_unreachable_before_the_apply_changes_nothing(bed: Bed) -> None:
    bed.tfs.reachable = False
    before = bed.config_path.stat().st_mtime_ns, bed.config_path.read_bytes()
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}))
    assert outcome.result == "failed" and not outcome.ok
    assert "TFS does not answer, so nothing was changed" in outcome.message
    assert (bed.config_path.stat().st_mtime_ns, bed.config_path.read_bytes()) == before
    assert bed.reloader.pushed == []


def test_a_reloader_check_that_fails_changes_nothing(bed: Bed) -> None:
    bed.reloader.check_error = DockerError("no container tfs on this Docker engine")
    before = bed.config_path.read_bytes()
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}))
    assert outcome.result == "failed"
    assert outcome.message.startswith("no container tfs on this Docker engine; nothing was")
    assert bed.config_path.read_bytes() == before and bed.reloader.pushed == []


def test_a_reload_failure_on_the_first_phase_rolls_back_while_tfs_serves_the_old_state(
    bed: Bed,
) -> None:
    def fail(config: ServingConfig, timeout: float | None = None) -> None:
        raise ReloadFailed("not pushing: animals base_path /models/animals is not on disk")

    bed.reloader.reload = fail  # type: ignore[method-assign]
    original = bed.config_path.read_bytes()
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}))
    assert outcome.result == "rolled_back", outcome.message
    assert bed.config_path.read_bytes() == original


def test_no_reload_writes_the_final_config_at_once(bed: Bed) -> None:
    bed.add_version(4)
    _, outcome = bed.converge(bed.desire("[2, 3, 4]", {"stable": 3, "canary": 3}), NoReload())
    assert outcome.result == "written", outcome.message
    assert "versions: 4" in bed.config_path.read_text()
    assert "versions: 1" not in bed.config_path.read_text()
    assert bed.tfs.labels == LAB_LABELS  # nobody told TFS


def test_no_reload_refuses_a_label_on_a_version_the_config_does_not_serve_yet(bed: Bed) -> None:
    original = bed.config_path.read_bytes()
    bed.add_version(4)
    desired = bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4})
    _, outcome = bed.converge(desired, NoReload())
    assert outcome.result == "failed"
    assert outcome.message.startswith(
        "animals: label canary -> 4 needs the version AVAILABLE first, and --reload none"
    )
    assert bed.config_path.read_bytes() == original
    # The way out it names: load the version in one apply, move the label in the next.
    _, first = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS), NoReload())
    _, second = bed.converge(desired, NoReload())
    assert (first.result, second.result) == ("written", "written"), second.message
    assert "value: 4" in bed.config_path.read_text()


def test_an_unphased_reloader_gets_only_the_target(bed: Bed) -> None:
    bed.add_version(4)
    restart_like(bed)
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}))
    assert outcome.result == "applied", outcome.message
    assert len(bed.reloader.pushed) == 1
    assert dict(bed.reloader.pushed[0].models[0].labels)["canary"] == 4
    assert bed.tfs.state(4) == "AVAILABLE"


def test_describe_serving_names_versions_and_labels(bed: Bed) -> None:
    desired = bed.desire("[1, 2, 3]", LAB_LABELS)
    observed = bed.observed(desired)
    assert observed.config is not None
    assert describe_serving(observed.config, observed.disk) == (
        "animals versions 1, 2, 3 (canary=3, deprecated=1, stable=2)"
    )


VERIFY = "    verify:\n      request: dog.json\n"


def restart_like(bed: Bed) -> None:
    def restart(config: ServingConfig, timeout: float | None = None) -> None:
        bed.reloader.pushed.append(config)
        bed.tfs.versions, bed.tfs.labels = {}, {}
        bed.tfs.take(ServingConfig((replace(config.models[0], labels=()),)))
        bed.tfs.labels = dict(config.models[0].labels)

    bed.reloader.phased = False
    bed.reloader.mode = ReloadMode.RESTART
    bed.reloader.reload = restart  # type: ignore[method-assign]


def test_with_a_restart_the_new_version_is_verified_once_loaded(bed: Bed) -> None:
    (bed.lab / "desired_state" / "dog.json").write_text('{"instances": [1]}')
    bed.add_version(4)
    restart_like(bed)
    states: list[str | None] = []
    desired = bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}, VERIFY)
    _, outcome = bed.converge(desired, verifier=lambda m, v, f: states.append(bed.tfs.state(v)))
    assert outcome.result == "applied", outcome.message
    assert states == ["AVAILABLE"]


def test_with_a_restart_a_failed_verification_restarts_back(bed: Bed) -> None:
    (bed.lab / "desired_state" / "dog.json").write_text('{"instances": [1]}')
    original = bed.config_path.read_bytes()
    bed.add_version(4)
    restart_like(bed)

    def verifier(model: str, version: int, request: str) -> None:
        raise VerifyFailed(f"verification of {model} version {version}: bad shape")

    desired = bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}, VERIFY)
    _, outcome = bed.converge(desired, verifier=verifier)
    assert outcome.result == "rolled_back", outcome.message
    assert len(bed.reloader.pushed) == 2
    assert bed.config_path.read_bytes() == original
    assert bed.tfs.labels == LAB_LABELS


def test_a_write_that_fails_mid_apply_rolls_back(bed: Bed) -> None:
    original = bed.config_path.read_bytes()
    bed.add_version(4)
    # Phase 2 of the apply fails (phase 1 is written and live).
    full = OSError(28, "No space left on device")
    bed.store = bed.failing_writes(lambda n: full if n == 2 else None)
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}))
    assert outcome.result == "rolled_back", outcome.message
    assert "No space left on device" in outcome.message
    assert bed.config_path.read_bytes() == original
    assert bed.tfs.labels == LAB_LABELS and bed.tfs.state(4) == "END"


def test_a_rollback_that_cannot_write_says_what_the_file_holds(bed: Bed) -> None:
    bed.add_version(4)
    read_only = OSError(30, "Read-only file system")
    bed.store = store = bed.failing_writes(lambda n: read_only if n > 1 else None)
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}))
    assert outcome.result == "failed"
    assert "Rolling back to the last-known-good config failed too: [Errno 30]" in outcome.message
    assert f"{bed.config_path} is unchanged since the failure" in outcome.message
    assert "last-known-good config is in " in outcome.message
    assert "TFS serves now: animals versions 1, 2, 3, 4 (" in outcome.message  # read again
    assert bed.config_path.read_text() == store.texts[0]  # phase 1, as the message says


def test_a_retried_version_that_fails_as_fast_as_before_fails_the_change(bed: Bed) -> None:
    bed.add_version(4)
    bed.tfs.broken.add(4)
    bed.tfs.load = 0.0  # it fails at once: TFS is never seen loading it
    desired = bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4})
    _, first = bed.converge(desired)
    assert first.result == "rolled_back", first.message
    started = bed.clock()
    _, again = bed.converge(desired, timeout=120.0)
    assert again.result == "rolled_back", again.message
    assert "animals version 4 failed to load: DATA_LOSS: version 4 is broken" in again.message
    assert bed.clock() - started < 10  # within the grace, not the 120 s timeout


class FakeContainer:
    """The DockerTarget a RestartReloader drives: TFS runs without the labels flag."""

    def __init__(self) -> None:
        self.restarts = 0

    def args(self) -> list[str]:
        return ["--model_config_file=/models/models.config"]

    def allows_labels_for_unavailable(self) -> bool:
        return False

    def restart(self) -> None:
        self.restarts += 1


def test_a_restart_tfs_could_not_start_from_is_refused_before_anything_is_written(
    bed: Bed,
) -> None:
    original = bed.config_path.read_bytes()
    container = FakeContainer()
    reloader = RestartReloader(container)  # type: ignore[arg-type]
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}), reloader)
    assert outcome.result == "failed"
    assert outcome.message.startswith("not restarting: the config has labels and TFS runs")
    assert "nothing was changed" in outcome.message
    assert bed.config_path.read_bytes() == original and container.restarts == 0


# --- TFS acts on version folders only at its file-system poll (issue 9) --------------------------


def test_with_a_slow_file_system_poll_the_wait_lasts_until_tfs_polls(bed: Bed) -> None:
    """UpdateConfig (file_system_storage_path_source.cc) does not scan the disk: a version
    added by a push is listed only at the next --file_system_poll_wait_seconds tick."""
    bed.add_version(4)
    bed.tfs.fs_poll = 5.0
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}), file_system_poll=5.0
    )
    assert outcome.result == "applied", outcome.message
    assert bed.tfs.label_log == [("canary", 4, "AVAILABLE")]
    assert bed.clock() >= 5.0  # it waited for the tick, and did not give up before it


def test_a_retried_version_is_not_judged_by_the_end_it_showed_before_the_push(bed: Bed) -> None:
    """With an 8 s poll, version 4 shows its old END for up to 8 s after the push: a grace
    shorter than the poll took that for a new failure."""
    bed.add_version(4)
    bed.tfs.broken.add(4)
    desired = bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4})
    _, first = bed.converge(desired)
    assert first.result == "rolled_back", first.message
    bed.tfs.broken.clear()  # fixed on disk, asked for again
    bed.tfs.fs_poll = 8.0
    bed.clock.now = 8.0 * 10 + 0.01  # just after a tick: the next one is ~8 s away
    _, again = bed.converge(desired, file_system_poll=8.0)
    assert again.result == "applied", again.message


def test_tfs_that_never_polls_its_disk_is_found_out_within_a_few_periods_not_at_the_timeout(
    bed: Bed,
) -> None:
    """--file_system_poll_wait_seconds=0 on TFS: the disk is polled only at start, so a
    version added by a push is never listed. The converger, told 1 s, stops after a few
    periods, rolls back and names the likely causes."""
    bed.add_version(4)
    bed.tfs.fs_poll = 0.0
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}), timeout=120.0)
    assert outcome.result == "rolled_back", outcome.message
    assert "animals version 4 is not listed yet" in outcome.message
    assert "--file_system_poll_wait_seconds 0" in outcome.message
    assert "base_path of another model" in outcome.message
    assert bed.clock() < 20.0  # a few 1 s periods, far from the 120 s timeout
    assert bed.tfs.labels == LAB_LABELS


def test_a_version_change_is_refused_before_writing_when_tfs_is_known_not_to_poll(
    bed: Bed,
) -> None:
    original = bed.config_path.read_bytes()
    bed.add_version(4)
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"canary": 4}), file_system_poll=0.0
    )
    assert outcome.result == "failed"
    assert "--file_system_poll_wait_seconds=0" in outcome.message
    assert "animals: versions 1, 2, 3 -> 1, 2, 3, 4" in outcome.message
    assert bed.config_path.read_bytes() == original and bed.reloader.pushed == []


def test_a_label_move_needs_no_poll_and_applies_when_tfs_never_polls(bed: Bed) -> None:
    bed.tfs.fs_poll = 0.0
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}), file_system_poll=0.0
    )
    assert outcome.result == "applied", outcome.message
    assert bed.tfs.labels["stable"] == 3


def test_serial_loads_take_one_load_time_each_and_progress_says_which_and_how_many(
    bed: Bed,
) -> None:
    """After start-up TFS loads one version at a time, highest first (num_load_threads 0 in
    model_servers/server.h; availability_preserving_policy.cc): 3 new versions, 3 loads."""
    for number in (4, 5, 6):
        bed.add_version(number)
    bed.tfs.fs_poll, bed.tfs.load = 1.0, 10.0
    seen: list[str] = []
    _, outcome = bed.converge(
        bed.desire("[1, 2, 3, 4, 5, 6]", LAB_LABELS | {"canary": 4}),
        timeout=120.0,
        on_progress=lambda progress, _elapsed: seen.append(progress.summary),
    )
    assert outcome.result == "applied", outcome.message
    assert bed.clock() >= 30.0  # three loads one after another, and no "stuck" verdict
    shown = list(dict.fromkeys(s for s in seen if s.startswith("loading")))
    assert shown == [
        "loading animals version 6; 3 version(s) left to load",
        "loading animals version 5; 2 version(s) left to load",
        "loading animals version 4; 1 version(s) left to load",
    ]


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "args"),
    [
        # tfs-sim:local: tini's "--" is tini's, not TFS's
        (
            ["/usr/bin/tini", "--", "/usr/bin/tf_serving_entrypoint.sh"],
            ["--allow_version_labels_for_unavailable_models=true"],
            ["--allow_version_labels_for_unavailable_models=true"],
        ),
        # the official image, and TFS as the entrypoint with flags of its own
        (["/usr/bin/tf_serving_entrypoint.sh"], ["--port=1"], ["--port=1"]),
        (
            ["tensorflow_model_server", "--rest_api_port=8501"],
            ["--port=1"],
            ["--rest_api_port=8501", "--port=1"],
        ),
        (None, ["tensorflow_model_server", "--port=1"], ["--port=1"]),
        (["/bin/sh", "-c"], ["exec serve --port=1"], ["exec serve --port=1"]),
        (None, None, []),
    ],
)
def test_tfs_s_arguments_in_a_container_follow_the_program_that_runs_tfs(
    entrypoint: list[str] | None, cmd: list[str] | None, args: list[str]
) -> None:
    from reconciler.docker_target import tfs_args

    assert tfs_args(entrypoint, cmd) == args


@pytest.mark.parametrize(
    ("args", "poll"),
    [
        (["--model_config_file=/models/models.config"], 1.0),
        (["--file_system_poll_wait_seconds=0"], 0.0),
        (["--file_system_poll_wait_seconds= 7"], 7.0),
        (["--file_system_poll_wait_seconds=2", "--file_system_poll_wait_seconds=-1"], -1.0),
        # TFS reads only --name=value: these leave it at its default, 1 s.
        (["--file_system_poll_wait_seconds", "0", "--port=8500"], 1.0),
        (["-file_system_poll_wait_seconds=30"], 1.0),
        (["--", "--file_system_poll_wait_seconds=0"], 1.0),
        # Values TFS cannot parse stop it at start: not a period to wait for.
        (["--file_system_poll_wait_seconds=5.5"], 1.0),
        (["--file_system_poll_wait_seconds=1_0"], 1.0),
        (["--file_system_poll_wait_seconds=4294967296"], 1.0),
    ],
)
def test_the_poll_period_is_read_from_the_container_s_command_line(
    args: list[str], poll: float
) -> None:
    """As tensorflow's command_line_flags.cc Flags::Parse reads it (ParseIntFlag: "--",
    the name, "=", absl::SimpleAtoi into an int32); an argument it does not match is an
    "unknown argument" to main.cc, which goes on with the default."""
    from reconciler.docker_target import file_system_poll_in

    assert file_system_poll_in(args) == poll


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--allow_version_labels_for_unavailable_models"], True),
        (["--allow_version_labels_for_unavailable_models=TRUE"], True),
        (["--allow_version_labels_for_unavailable_models=1"], True),
        (["--allow_version_labels_for_unavailable_models=false"], False),
        (
            [
                "--allow_version_labels_for_unavailable_models=true",
                "--allow_version_labels_for_unavailable_models=false",
            ],
            False,
        ),
        (["--ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS=true"], False),
        (["--allow_version_labels_for_unavailable_models", "true", "--"], True),
        (["--", "--allow_version_labels_for_unavailable_models=true"], False),
    ],
)
def test_the_label_flag_is_read_as_tfs_reads_it(
    args: list[str], allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ParseBoolFlag: the last occurrence wins, the name is matched as written."""
    from reconciler.docker_target import DockerTarget

    target = DockerTarget("tfs")
    monkeypatch.setattr(target, "args", lambda: args)
    assert target.allows_labels_for_unavailable() is allowed


def test_a_reload_that_failed_after_moving_labels_is_rolled_back_from_what_serves(
    bed: Bed,
) -> None:
    """ServerCore::ReloadConfig swaps the label map before it adds models: a reload that then
    fails (UNKNOWN "... did not become available") has already moved the labels."""
    bed.add_version(4)
    pushes = []

    def take_then_fail(config: ServingConfig, timeout: float | None = None) -> None:
        pushes.append(config)
        bed.tfs.take(config)
        if len(pushes) == 2:  # the relabel phase: labels moved, then the reload fails
            raise ReloadRejected("UNKNOWN", "Model iris did not become available")

    bed.reloader.reload = take_then_fail  # type: ignore[method-assign]
    _, outcome = bed.converge(bed.desire("[1, 2, 3, 4]", LAB_LABELS | {"stable": 4}))
    assert outcome.result == "rolled_back", outcome.message
    assert "did not become available" in outcome.message
    assert bed.tfs.labels == LAB_LABELS
    assert all(state == "AVAILABLE" for _, _, state in bed.tfs.label_log)


def test_a_rollback_with_no_reload_does_not_claim_what_tfs_serves(bed: Bed) -> None:
    full = OSError(28, "No space left on device")
    bed.store = bed.failing_writes(lambda n: full if n == 1 else None)
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS | {"stable": 3}), NoReload())
    assert outcome.result == "rolled_back", outcome.message
    assert "serving now" not in outcome.message
    assert "TFS was not asked" in outcome.message


@dataclass
class HangingOnNewModels:
    """A TfsGrpc stand-in: a push that adds a model waits, as ServerCore::ReloadConfig does,
    for a version of it that only a file-system poll would find (here never), asking
    `give_up` every 0.25 s of the fake clock as TfsGrpc does."""

    tfs: FakeTfs
    clock: FakeClock
    abandoned: list[str] = field(default_factory=list)

    def reload(
        self,
        config: ServingConfig,
        timeout: float | None = None,
        give_up: Callable[[], str | None] | None = None,
    ) -> None:
        if self.abandoned:  # TFS still works on that push, under its lock
            raise AssertionError("pushed again behind a push TFS never finishes")
        self.tfs.take(config)
        if [m for m in config.models if m.name != MODEL]:
            ends = self.clock() + (timeout or 0.0)
            while self.clock() < ends:
                self.clock.now += 0.25
                reason = give_up() if give_up is not None else None
                if reason is not None:
                    self.abandoned.append(reason)
                    raise ReloadAbandoned(reason)
            raise TfsUnreachable("DEADLINE_EXCEEDED")


def test_a_push_adding_a_model_tfs_never_lists_is_given_up_after_a_few_polls(bed: Bed) -> None:
    shutil.copytree(bed.lab / "models" / MODEL, bed.lab / "models" / "iris")
    (bed.lab / "desired_state" / "iris.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  iris:\n    versions: [1]\n"
    )
    original = bed.config_path.read_bytes()
    client = HangingOnNewModels(bed.tfs, bed.clock)
    reloader = reload_module.GrpcReloader(client=client)  # type: ignore[arg-type]
    _, outcome = bed.converge(bed.desire("[1, 2, 3]", LAB_LABELS), reloader, timeout=120.0)
    assert outcome.result == "failed", outcome.message
    assert client.abandoned and "iris has no version listed" in outcome.message
    assert "--file_system_poll_wait_seconds 0" in outcome.message
    assert "nothing was pushed back" in outcome.message
    assert "TFS serves now: animals versions 1, 2, 3" in outcome.message
    assert bed.clock() < 20.0  # a few 1 s polls, not the 80 s the push could have taken
    assert bed.config_path.read_bytes() == original  # for TFS to read when it restarts
