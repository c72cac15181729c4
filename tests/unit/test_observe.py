"""Observation: the version folders TFS would see under a base_path, and live status."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler import observe as observe_module
from reconciler.desired import parse_documents
from reconciler.disk_scan import OUTSIDE_ROOT
from reconciler.observe import (
    LIVE_READERS,
    LiveModel,
    LiveStatus,
    LiveVersion,
    Observed,
    Prefetched,
    TfsUnreachable,
    host_path,
    observe,
    read_live,
    scan_disk,
    scan_model,
)
from reconciler.plan import plan
from reconciler.problems import InputError
from reconciler.tfs_config import ConfigModel, ServingConfig, render_config


def _version(folder: Path, name: str, saved_model: bytes = b"pb") -> None:
    (folder / name).mkdir(parents=True)
    if saved_model:
        (folder / name / "saved_model.pb").write_bytes(saved_model)


def test_versions_are_the_integer_named_entries_as_tfs_parses_them(tmp_path: Path) -> None:
    """file_system_storage_path_source.cc AspireAllVersions/ParseVersionNumber: every child
    whose name parses as an int64 is a version, a plain file too; `0005` is version 5."""
    for name in ("1", "2", "10", "latest", ".3.tmp", "0005"):
        _version(tmp_path, name)
    (tmp_path / "4").write_text("a file, not a folder")
    folder = scan_model("m", tmp_path)
    assert folder.numbers == (1, 2, 4, 5, 10)
    four, five = folder.version(4), folder.version(5)
    assert four is not None and four.plain_file and not four.loadable
    assert five is not None and five.path.endswith("0005") and five.loadable
    assert folder.duplicates == {}


def test_version_names_parse_as_absl_simple_atoi_does(tmp_path: Path) -> None:
    """file_system_storage_path_source.cc ParseVersionNumber calls absl::SimpleAtoi: ASCII
    spaces around and a sign allowed, decimal digits only (the simulator's disk.simple_atoi)."""
    for name in ("+6", " 7", "8\t", "1e3", "0x9", "-", "+", "-2", "+-3"):
        _version(tmp_path, name)
    assert scan_model("m", tmp_path).numbers == (-2, 6, 7, 8)


def test_two_folders_naming_one_version_are_found(tmp_path: Path) -> None:
    for name in ("4", "0004", "1"):
        _version(tmp_path, name)
    folder = scan_model("m", tmp_path)
    assert folder.numbers == (1, 4)
    assert folder.duplicates == {4: ("0004", "4")}


def test_folder_names_beyond_int64_are_not_versions(tmp_path: Path) -> None:
    # TFS parses version folder names as int64 and ignores the rest; such a number also
    # cannot be written into models.config.
    _version(tmp_path, "3")
    _version(tmp_path, "9223372036854775807")
    _version(tmp_path, "99999999999999999999")
    assert scan_model("m", tmp_path).numbers == (3, 9223372036854775807)


def test_non_ascii_digits_are_not_versions(tmp_path: Path) -> None:
    _version(tmp_path, "\u0663")  # ARABIC-INDIC DIGIT THREE
    assert scan_model("m", tmp_path).numbers == ()


def test_a_version_without_a_saved_model_is_not_loadable(tmp_path: Path) -> None:
    _version(tmp_path, "1")
    _version(tmp_path, "2", saved_model=b"")
    _version(tmp_path, "3", saved_model=b"")
    (tmp_path / "3" / "saved_model.pbtxt").write_text("meta_graphs {}")
    loadable = {v.version: v.loadable for v in scan_model("m", tmp_path).versions}
    assert loadable == {1: True, 2: False, 3: True}


def test_missing_model_folder_does_not_exist(tmp_path: Path) -> None:
    assert scan_model("m", tmp_path / "nope").exists is False


def test_container_paths_map_to_host_paths_under_the_serving_root(tmp_path: Path) -> None:
    assert host_path("/models/animals/", "/models", tmp_path) == tmp_path / "animals"
    assert host_path("/elsewhere/animals", "/models", tmp_path) is None
    assert host_path("/modelsX/animals", "/models", tmp_path) is None


def test_scan_disk_reads_each_model_at_its_base_path(tmp_path: Path) -> None:
    _version(tmp_path / "zoo" / "animals", "7")
    disk = scan_disk({"animals": "/models/zoo/animals", "lost": "/srv/lost"}, "/models", tmp_path)
    animals, lost = disk.model("animals"), disk.model("lost")
    assert animals is not None and animals.numbers == (7,)
    assert lost is not None and lost.exists is False


class _Tfs:
    """Answers status and labels from memory; `down` names models whose request fails."""

    def __init__(self, down: frozenset[str] = frozenset()) -> None:
        self.down = down
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def model_status(self, name: str) -> LiveModel:
        with self.lock:
            self.asked.append(name)
        if name in self.down:
            raise TfsUnreachable("connection refused")
        return LiveModel(name, True, (LiveVersion(1, "AVAILABLE"),))

    def label_version(self, name: str, label: str) -> int | None:
        return 1


def test_read_live_reads_many_models_and_keeps_their_order() -> None:
    names = [f"m{i:02}" for i in range(40)]
    status = read_live(_Tfs(), reversed(names), {"m07": ["stable"]})
    assert status.reachable
    assert [m.name for m in status.models] == names
    assert dict(status.models[7].labels) == {"stable": 1}


def test_read_live_asks_no_label_of_a_model_with_no_available_version() -> None:
    """TFS resolves a label only through an AVAILABLE version (GetModelMetadata takes a
    servable handle): those lookups would fail, and are not made."""

    class Tfs(_Tfs):
        def model_status(self, name: str) -> LiveModel:
            state = "AVAILABLE" if name == "up" else "LOADING"
            return LiveModel(name, True, (LiveVersion(1, state),))

        def label_version(self, name: str, label: str) -> int | None:
            self.asked.append(name)  # only labels are recorded here
            return 1

    tfs = Tfs()
    status = read_live(tfs, ["loading", "up"], {"loading": ["stable"], "up": ["stable"]})
    assert [dict(m.labels) for m in status.models] == [{}, {"stable": 1}]
    assert tfs.asked == ["up"]


def test_read_live_asks_only_the_models_given() -> None:
    tfs = _Tfs()
    read_live(tfs, ["b"], {})
    assert tfs.asked == ["b"]


def test_read_live_is_unreachable_when_any_request_fails() -> None:
    status = read_live(_Tfs(down=frozenset({"m13"})), [f"m{i}" for i in range(30)], {})
    assert not status.reachable
    assert "connection refused" in status.error


GUARD = 30.0  # seconds: only a broken read waits this long; no verdict depends on time


class _Held(_Tfs):
    """A TFS whose every status answer waits for `release`, but for the `down` models, which
    fail at once; it records which threads asked."""

    def __init__(self, down: frozenset[str] = frozenset()) -> None:
        super().__init__(down)
        self.release = threading.Event()
        self.threads: set[int] = set()

    def model_status(self, name: str) -> LiveModel:
        with self.lock:
            self.threads.add(threading.get_ident())
        if name not in self.down:
            assert self.release.wait(GUARD), "never released"
        return super().model_status(name)


def _readers_done() -> None:
    """Wait for every thread of a live read to end (one may not have started yet)."""
    while alive := [t for t in threading.enumerate() if t.name in ("live-read", "live-reader")]:
        for thread in alive:
            with contextlib.suppress(RuntimeError):  # "cannot join thread before it is started"
                thread.join(GUARD)


def test_read_live_stops_at_the_first_unreachable_answer() -> None:
    """The first failure decides: read_live returns while the other requests are still in
    flight, and no reader starts a model after it."""
    names = [f"m{i:02}" for i in range(30)]
    tfs = _Held(down=frozenset({f"m{LIVE_READERS - 1:02}"}))  # the last of the first readers
    answer: list[LiveStatus] = []
    caller = threading.Thread(target=lambda: answer.append(read_live(tfs, names, {})))
    caller.start()
    caller.join(GUARD)
    returned_while_held = bool(answer)
    tfs.release.set()
    caller.join(GUARD)
    _readers_done()
    assert returned_while_held, "read_live waited for the requests in flight"
    assert not answer[0].reachable and "connection refused" in answer[0].error
    assert sorted(tfs.asked) == names[:LIVE_READERS]


def test_read_live_reads_with_a_bounded_set_of_threads() -> None:
    tfs = _Held()
    tfs.release.set()
    status = read_live(tfs, [f"m{i:03}" for i in range(300)], {})
    assert status.reachable and len(status.models) == 300
    assert len(tfs.asked) == 300
    assert 1 <= len(tfs.threads) <= LIVE_READERS


def test_observe_reads_live_state_while_it_reads_models_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TFS is asked before models.config is read; what only models.config names (a model,
    a label) is asked for after, and the answer is the one a read of everything gives."""
    _version(tmp_path / "a", "1")
    _version(tmp_path / "b", "1")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        '  config { name: "a" base_path: "/models/a" model_platform: "tensorflow"'
        '    version_labels { key: "old" value: 1 } }\n'
        '  config { name: "b" base_path: "/models/b" model_platform: "tensorflow" }\n'
        "}\n"
    )
    asked = threading.Event()

    class Tfs(_Tfs):
        def model_status(self, name: str) -> LiveModel:
            asked.set()
            return super().model_status(name)

    real = observe_module.read_config

    def read_config(path: Path) -> Any:
        assert asked.wait(GUARD), "models.config was read before TFS was asked"
        return real(path)

    monkeypatch.setattr(observe_module, "read_config", read_config)
    tfs = Tfs()
    observed = observe(
        {"a": "/models/a"},
        {"a": ["stable"]},
        models_dir=tmp_path,
        serving_root="/models",
        config_path=config,
        live_source=tfs,
    )
    assert observed.live == read_live(_Tfs(), ["a", "b"], {"a": ["old", "stable"]})
    assert sorted(tfs.asked) == ["a", "b"]


def test_observe_asks_only_the_live_models_given(tmp_path: Path) -> None:
    tfs = _Tfs()
    observed = observe(
        {"a": "/models/a", "b": "/models/b"},
        {},
        models_dir=tmp_path,
        serving_root="/models",
        config_path=tmp_path / "models.config",
        live_source=tfs,
        live_models=["b"],
    )
    assert observed.live is not None and [m.name for m in observed.live.models] == ["b"]
    assert tfs.asked == ["b"]


def test_observe_stops_the_live_read_when_models_config_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "models.config").write_text("model_config_list { nonsense }\n")
    tfs = _Held()
    with pytest.raises(InputError):
        observe(
            {f"m{i:02}": f"/models/m{i:02}" for i in range(30)},
            {},
            models_dir=tmp_path,
            serving_root="/models",
            config_path=tmp_path / "models.config",
            live_source=tfs,
        )
    tfs.release.set()
    _readers_done()
    assert len(tfs.asked) <= LIVE_READERS  # the readers in flight finished; none started more


def _config_of(tmp_path: Path, models: dict[str, dict[str, int]]) -> Path:
    config = tmp_path / "models.config"
    config.write_text(
        render_config(
            ServingConfig(
                tuple(
                    ConfigModel(n, f"/models/{n}", labels=tuple(sorted(ls.items())))
                    for n, ls in models.items()
                )
            )
        )
    )
    return config


def test_prefetched_reads_what_models_config_names_and_hands_each_answer_out_once(
    tmp_path: Path,
) -> None:
    tfs = _Tfs()
    asked_labels: list[tuple[str, str]] = []
    real = tfs.label_version

    def label_version(name: str, label: str) -> int | None:
        asked_labels.append((name, label))
        return real(name, label)

    tfs.label_version = label_version  # type: ignore[method-assign]
    source = Prefetched(tfs, _config_of(tmp_path, {"a": {"stable": 1}, "b": {}}))
    _readers_done()
    assert sorted(tfs.asked) == ["a", "b"] and asked_labels == [("a", "stable")]
    live = read_live(source, ["a", "b", "c"], {"a": ["stable"]})
    assert [(m.name, dict(m.labels)) for m in live.models] == [
        ("a", {"stable": 1}),
        ("b", {}),
        ("c", {}),
    ]
    assert sorted(tfs.asked) == ["a", "b", "c"]  # only c was asked again
    source.model_status("a")
    assert sorted(tfs.asked) == ["a", "a", "b", "c"]  # an answer read ahead is used once


def test_prefetched_hands_an_error_to_who_asks_for_it_and_asks_the_rest_again(
    tmp_path: Path,
) -> None:
    tfs = _Tfs(down=frozenset({"a"}))
    source = Prefetched(tfs, _config_of(tmp_path, {"a": {}, "b": {}}))
    _readers_done()
    with pytest.raises(TfsUnreachable):
        source.model_status("a")
    tfs.down = frozenset()
    assert source.model_status("b").found  # read ahead, or asked now if the read stopped first


def test_prefetched_reads_nothing_ahead_without_a_valid_models_config(tmp_path: Path) -> None:
    (tmp_path / "models.config").write_text("model_config_list { nonsense }\n")
    tfs = _Tfs()
    for config in (tmp_path / "models.config", tmp_path / "missing.config"):
        source = Prefetched(tfs, config)
        _readers_done()
        assert tfs.asked == []
        assert source.model_status("a").found and tfs.asked == ["a"]
        tfs.asked.clear()


def test_a_model_folder_with_a_name_too_long_is_unreadable_not_fatal(tmp_path: Path) -> None:
    folder = scan_model("m", tmp_path / ("x" * 300))  # ENAMETOOLONG from the file system
    assert (folder.exists, folder.versions) == (False, ())
    assert folder.error == "File name too long"


def test_a_model_folder_it_may_not_read_is_unreadable_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _version(tmp_path, "1")
    real = os.scandir

    def scandir(path: str) -> Any:  # tests run as root: deny this one folder at the edge
        if path == str(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    folder = scan_model("m", tmp_path)
    assert (folder.exists, folder.error) == (False, "Permission denied")


# --- links: what lies outside the models folder is not TFS's -----------------------------------


def test_a_version_folder_linked_out_of_the_models_folder_is_not_taken(tmp_path: Path) -> None:
    """The rule for a base_path outside the serving root, applied after links: in TFS's
    container a link out of its mount leads elsewhere, or nowhere."""
    models, outside = tmp_path / "models", tmp_path / "outside"
    _version(outside, "2")
    _version(models / "m", "1")
    (models / "m" / "2").symlink_to(outside / "2")
    (models / "m" / "3").symlink_to(models / "m" / "1")  # a link within the folder is fine
    disk = scan_disk({"m": "/models/m"}, "/models", models)
    folder = disk.model("m")
    assert folder is not None
    assert {v.version: (v.loadable, v.refused) for v in folder.versions} == {
        1: (True, ""),
        2: (False, OUTSIDE_ROOT),
        3: (True, ""),
    }


def test_a_saved_model_linked_out_of_the_models_folder_is_not_taken(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "outside"
    outside.mkdir()
    (outside / "saved_model.pb").write_bytes(b"pb")
    (models / "m" / "1").mkdir(parents=True)
    (models / "m" / "1" / "saved_model.pb").symlink_to(outside / "saved_model.pb")
    folder = scan_disk({"m": "/models/m"}, "/models", models).model("m")
    assert folder is not None and [v.loadable for v in folder.versions] == [False]


def test_a_model_folder_linked_out_of_the_models_folder_is_not_taken(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "outside"
    _version(outside / "m", "1")
    models.mkdir()
    (models / "m").symlink_to(outside / "m")
    (models / "zoo").symlink_to(outside)
    disk = scan_disk({"m": "/models/m", "n": "/models/zoo/m"}, "/models", models)
    for name in ("m", "n"):
        folder = disk.model(name)
        assert folder is not None and not folder.exists and folder.refused == OUTSIDE_ROOT


def test_a_models_folder_reached_through_a_link_is_scanned_as_usual(tmp_path: Path) -> None:
    _version(tmp_path / "real" / "m", "1")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    folder = scan_disk({"m": "/models/m"}, "/models", tmp_path / "link").model("m")
    assert folder is not None and folder.numbers == (1,) and folder.versions[0].loadable


def test_the_plan_names_a_version_linked_out_of_the_models_folder(tmp_path: Path) -> None:
    models, outside = tmp_path / "models", tmp_path / "outside"
    _version(outside, "1")
    (models / "m").mkdir(parents=True)
    (models / "m" / "1").symlink_to(outside / "1")
    desired = parse_documents(
        [("f.yaml", b"apiVersion: tfs-reconciler/v1\nmodels:\n  m: {versions: [1]}\n")]
    )
    disk = scan_disk({"m": "/models/m"}, "/models", models)
    (problem,) = plan(desired, Observed(disk, None)).problems
    assert str(problem) == (
        f"f.yaml:3:17: models.m.versions: version 1 has no SavedModel: {models}/m/1 {OUTSIDE_ROOT}"
    )
