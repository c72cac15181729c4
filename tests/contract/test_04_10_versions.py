"""Reference section 9, items 4-10: version folders, policies and the version lifecycle."""

from __future__ import annotations

import time

import pytest

from .tfs_contract import StartTfs, Tfs, model_config, server_config, wait_until

pytestmark = [pytest.mark.contract, pytest.mark.integration]


def watch_states(
    tfs: Tfs, model: str, until: dict[int, str], timeout: float
) -> list[dict[int, str]]:
    """Status snapshots (every change) until each listed version is in its state."""
    seen: list[dict[int, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = tfs.states(model)
        if not seen or seen[-1] != states:
            seen.append(states)
        if all(states.get(v) == s for v, s in until.items()):
            return seen
        time.sleep(0.02)
    pytest.fail(f"{model} never reached {until}; seen {seen}")


def test_04_versions_are_the_names_simple_atoi_parses_others_ignored(start_tfs: StartTfs) -> None:
    """file_system_storage_path_source.cc ParseVersionNumber (absl::SimpleAtoi) and
    AspireAllVersions: ``0009`` is version 9 (loaded from ``0009``), ``-4`` is version -4, a
    plain file named ``7`` is a version whose load fails (END); other names are ignored."""
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), all_versions=True)
        ),
        models={"a": [1, 2]},
    )
    a = tfs.name("a")
    for odd in ("latest", "v3", ".5.tmp", "6a", "0009", "-4"):
        tfs.add_version(a, odd)
    (tfs.models_dir / a / "7").write_text("a file, not a folder")
    tfs.add_version(a, 8)
    tfs.wait_available(a, {-4, 1, 2, 8, 9})
    tfs.wait_states(a, {7: "END"})
    assert set(tfs.states(a)) == {-4, 1, 2, 7, 8, 9}
    status = tfs.get(f"/v1/models/{a}/versions/7").json()["model_version_status"][0]["status"]
    assert status["error_code"] == "NOT_FOUND"
    assert "Could not find SavedModel .pb or .pbtxt" in status["error_message"]


def test_05_version_policies_latest_all_specific_and_default_latest_one(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("none"), t.base_path(t.name("none"))),
            model_config(t.name("latest"), t.base_path(t.name("latest")), latest=2),
            model_config(t.name("all"), t.base_path(t.name("all")), all_versions=True),
            model_config(t.name("spec"), t.base_path(t.name("spec")), specific=[1, 3]),
        ),
        models={base: [1, 2, 3] for base in ("none", "latest", "all", "spec")},
    )
    expected = {"none": {3}, "latest": {2, 3}, "all": {1, 2, 3}, "spec": {1, 3}}
    for base, versions in expected.items():
        tfs.wait_available(tfs.name(base), versions)
        assert set(tfs.states(tfs.name(base))) == versions, base


def test_06_version_goes_start_loading_available_taking_the_load_time(start_tfs: StartTfs) -> None:
    load_seconds = 1.0
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), all_versions=True)
        ),
        models={"a": [1]},
        extra_args=[f"--sim_load_seconds_for=a:2={load_seconds}"],
    )
    a = tfs.name("a")
    added = time.monotonic()
    tfs.add_version(a, 2)
    seen = watch_states(tfs, a, {2: "LOADING"} if tfs.is_simulator else {}, tfs.settle_seconds)
    seen += watch_states(tfs, a, {2: "AVAILABLE"}, tfs.settle_seconds)
    took = time.monotonic() - added
    order = ["START", "LOADING", "AVAILABLE"]
    states_of_2 = [s[2] for s in seen if 2 in s]
    states_of_2 = [s for i, s in enumerate(states_of_2) if i == 0 or states_of_2[i - 1] != s]
    assert states_of_2 == sorted(set(states_of_2), key=order.index), states_of_2
    assert states_of_2[-1] == "AVAILABLE"
    if tfs.is_simulator:  # the load time is a simulator knob
        assert "LOADING" in states_of_2
        # Not before the load time; and not much later (a file-system poll, then the load).
        assert load_seconds <= took <= load_seconds + tfs.fs_poll_seconds + 2.0


def test_07_new_versions_load_before_old_ones_unload(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
        extra_args=["--sim_load_seconds_for=a:2=1.0"],
    )
    a = tfs.name("a")
    tfs.add_version(a, 2)
    seen = watch_states(tfs, a, {2: "AVAILABLE", 1: "END"}, tfs.settle_seconds)
    for states in seen:
        assert "AVAILABLE" in states.values(), f"a gap with nothing AVAILABLE: {seen}"
        if states.get(2) in ("START", "LOADING"):
            assert states.get(1) == "AVAILABLE", seen
        if states.get(1) in ("UNLOADING", "END"):
            assert states.get(2) == "AVAILABLE", seen


def test_08_version_without_loadable_savedmodel_ends_in_end_with_error(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), all_versions=True)
        ),
        models={"a": [1]},
    )
    a = tfs.name("a")
    tfs.add_version(a, 2, saved_model=b"")  # no saved_model.pb
    tfs.add_version(a, 3, saved_model=b"\xff\xff\xff not a protobuf")  # corrupt
    tfs.wait_states(a, {2: "END", 3: "END"}, timeout=tfs.settle_seconds + 10)
    status = {s["version"]: s for s in tfs.get(f"/v1/models/{a}").json()["model_version_status"]}
    for version in ("2", "3"):
        assert status[version]["status"]["error_code"] != "OK", status[version]
        assert status[version]["status"]["error_message"], status[version]
    assert status["1"]["state"] == "AVAILABLE"
    assert tfs.answer(f"/v1/models/{a}/versions/1")
    assert tfs.get(f"/v1/models/{a}/metadata").json()["model_spec"]["version"] == "1"


def test_09_removed_version_unloads_to_end_and_stays_listed(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), all_versions=True)
        ),
        models={"a": [1, 2]},
    )
    a = tfs.name("a")
    tfs.remove_version(a, 2)
    seen = watch_states(tfs, a, {2: "END"}, tfs.settle_seconds)
    assert all(s.get(2) in ("AVAILABLE", "UNLOADING", "END") for s in seen), seen
    tfs.add_version(a, 3)  # later scans and loads happen...
    tfs.wait_available(a, {1, 3})
    assert tfs.states(a) == {1: "AVAILABLE", 2: "END", 3: "AVAILABLE"}  # ...and 2 stays listed


def test_10_new_version_folder_under_latest_is_picked_up_within_poll(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")))),
        models={"a": [1]},
    )
    a = tfs.name("a")
    added = time.monotonic()
    tfs.add_version(a, 2)
    wait_until(lambda: 2 in tfs.states(a), 2 * tfs.fs_poll_seconds + 2, "version 2 listed")
    assert time.monotonic() - added <= 2 * tfs.fs_poll_seconds + 1
    tfs.wait_available(a, {2})
