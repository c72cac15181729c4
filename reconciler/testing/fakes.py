"""In-memory stand-ins for TFS, its reloader and the clock, to test a converger or a pass
without processes or sleeping: `FakeTfs`, `FakeReloader`, `FakeClock`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reconciler.policy import served_versions
from reconciler.reload import ReloadMode
from reconciler.state import LiveModel, LiveVersion, TfsUnreachable
from reconciler.tfs_config import ServingConfig
from reconciler.tfs_grpc import ReloadRejected


class FakeClock:
    """A clock for `clock=` and `sleep=` parameters: time moves only when slept."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Version:
    state: str
    due: float = 0.0
    error: str = ""
    begins: float = 0.0  # a START version begins LOADING then (serial loads)


@dataclass
class FakeTfs:
    """TFS serving one model (`model`, versions 1-3 AVAILABLE and labelled deprecated=1,
    stable=2, canary=3), in memory: a StatusSource, and the server a FakeReloader pushes to.

    It keeps TFS's rules that matter to a converger: a label may only be set on (or moved to)
    an AVAILABLE version, else the config is refused with FAILED_PRECONDITION and nothing
    changes (ServerCore::UpdateModelVersionLabelMap in server_core.cc); new versions take
    `load` seconds of the fake clock to become AVAILABLE (or END with an error when in
    `broken`); versions no longer served go END once the new ones serve
    (availability_preserving_policy.cc)."""

    clock: FakeClock
    models_dir: Path
    load: float = 1.0
    model: str = "animals"
    broken: set[int] = field(default_factory=set)
    reachable: bool = True
    versions: dict[int, Version] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    label_log: list[tuple[str, int, str]] = field(default_factory=list)  # label, version, state
    # None: versions change at the push. Else TFS's --file_system_poll_wait_seconds: a push
    # changes labels at once, versions at the next poll tick (0: never), as UpdateConfig of
    # file_system_storage_path_source.cc; loads then run one at a time, highest first
    # (availability_preserving_policy.cc, num_load_threads 0 in model_servers/server.h).
    fs_poll: float | None = None
    _served: set[int] | None = field(default=None, init=False)  # what the last push asked
    pending: tuple[set[int], float] | None = None  # versions aspired at the next poll, when

    def __post_init__(self) -> None:
        self.versions = {n: Version("AVAILABLE") for n in (1, 2, 3)}
        self.labels = {"deprecated": 1, "stable": 2, "canary": 3}

    def _on_disk(self) -> list[int]:
        folder = self.models_dir / self.model
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())

    def state(self, number: int) -> str | None:
        self._advance()
        version = self.versions.get(number)
        return version.state if version is not None else None

    def take(self, config: ServingConfig) -> None:
        if not self.reachable:
            raise TfsUnreachable("fake TFS does not answer")
        self._advance()
        model = config.model(self.model)
        assert model is not None
        for label, number in model.labels:
            if self.labels.get(label) != number and self.state(number) != "AVAILABLE":
                raise ReloadRejected(
                    "FAILED_PRECONDITION",
                    f"Request to assign label to version {number} of model {self.model}, which is "
                    "not currently available for inference",
                )
        for label, number in model.labels:
            if self.labels.get(label) != number:
                self.label_log.append((label, number, self.state(number) or "-"))
        self.labels = dict(model.labels)
        served = set(served_versions(model.effective_policy, self._on_disk()))
        if self.fs_poll is None:
            self._aspire(served, self.clock())
        elif self.fs_poll > 0:
            tick = (int(self.clock() / self.fs_poll) + 1) * self.fs_poll
            self.pending = (served, tick)
        self._advance()

    def _aspire(self, served: set[int], now: float) -> None:
        new = [n for n in served if self.versions.get(n) is None or self.versions[n].state == "END"]
        for turn, number in enumerate(sorted(new, reverse=True)):
            if self.fs_poll is None:
                self.versions[number] = Version("LOADING", now + self.load)
            else:
                begins = now + turn * self.load
                self.versions[number] = Version("START", begins + self.load, begins=begins)
        self._served = served

    def _advance(self) -> None:
        now = self.clock()
        if self.pending is not None and now >= self.pending[1]:
            aspired, tick = self.pending
            self.pending = None
            self._aspire(aspired, tick)
        for number, version in self.versions.items():
            if version.state == "START" and now >= version.begins:
                version.state = "LOADING"
            if version.state == "LOADING" and now >= version.due:
                if number in self.broken:
                    version.state, version.error = "END", f"version {number} is broken"
                else:
                    version.state = "AVAILABLE"
        served = self._served
        if served is None:
            return
        if all(
            self.versions[n].state not in ("START", "LOADING") for n in served if n in self.versions
        ):
            for number, version in self.versions.items():
                if number not in served and version.state == "AVAILABLE":
                    version.state = "END"

    # StatusSource
    def model_status(self, name: str) -> LiveModel:
        if not self.reachable:
            raise TfsUnreachable("fake TFS does not answer")
        self._advance()
        if name != self.model:
            return LiveModel(name, found=False)
        entries = tuple(
            LiveVersion(n, v.state, "DATA_LOSS" if v.error else "OK", v.error)
            for n, v in sorted(self.versions.items(), reverse=True)
        )
        return LiveModel(name, True, entries)

    def label_version(self, name: str, label: str) -> int | None:
        number = self.labels.get(label)
        return number if number is not None and self.state(number) == "AVAILABLE" else None


@dataclass
class FakeReloader:
    """A Reloader that pushes each config to a FakeTfs (a gRPC push, by default)."""

    tfs: FakeTfs
    mode: ReloadMode = ReloadMode.GRPC
    waits: bool = True
    phased: bool = True
    pushed: list[ServingConfig] = field(default_factory=list)

    check_error: Exception | None = None

    def check(self, target: ServingConfig) -> None:
        if self.check_error is not None:
            raise self.check_error

    def reload(self, config: ServingConfig, timeout: float | None = None) -> None:
        self.pushed.append(config)
        self.tfs.take(config)
