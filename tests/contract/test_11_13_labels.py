"""Reference section 9, items 11-13: version labels."""

from __future__ import annotations

import grpc
import pytest

from .tfs_contract import StartTfs, Tfs, model_config, server_config

pytestmark = [pytest.mark.contract, pytest.mark.integration]


def label_message(version: int, model: str) -> str:
    return (
        f"Request to assign label to version {version} of model {model}, which is not "
        "currently available for inference"
    )


def assert_refused(tfs: Tfs, config: object, version: int, model: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        tfs.push(config)  # type: ignore[arg-type]
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == label_message(version, model)


def test_11_label_on_unavailable_version_is_refused_and_old_config_and_labels_stay(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(model_config(t.name("a"), t.base_path(t.name("a")), specific=[1])),
        models={"a": [1, 2, 3]},
        allow_labels=False,
        any_labels_flag=True,
    )
    a = tfs.name("a")
    tfs.apply(server_config(model_config(a, tfs.base_path(a), specific=[1], labels={"stable": 1})))
    assert tfs.label_version(a, "stable") == 1
    if not tfs.allow_labels:
        # A new label on a version not loaded (and only added by this same change).
        assert_refused(
            tfs,
            server_config(
                model_config(
                    a, tfs.base_path(a), specific=[1, 2], labels={"stable": 1, "canary": 2}
                )
            ),
            2,
            a,
        )
    # Moving a label to a version that is not loaded.
    assert_refused(
        tfs,
        server_config(model_config(a, tfs.base_path(a), specific=[1, 3], labels={"stable": 3})),
        3,
        a,
    )
    # The old config stays: versions 2 and 3 (on disk all along) were not loaded, and the
    # labels are as before.
    assert tfs.states(a) == {1: "AVAILABLE"}
    assert tfs.label_version(a, "stable") == 1
    assert tfs.get(f"/v1/models/{a}/labels/canary/metadata").status_code == 400


def test_12_allow_flag_lets_a_new_label_point_at_a_loading_version_but_not_move_one(
    start_tfs: StartTfs,
) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(t.name("a"), t.base_path(t.name("a")), specific=[1], labels={"stable": 1})
        ),
        models={"a": [1, 2, 3]},
        allow_labels=True,
        extra_args=["--sim_load_seconds_for=a:2=1.0"],
    )
    a = tfs.name("a")
    # A new label on a version added (so not yet AVAILABLE) by the same change: accepted.
    tfs.apply(
        server_config(
            model_config(a, tfs.base_path(a), specific=[1, 2], labels={"stable": 1, "canary": 2})
        )
    )
    # FileSystemStoragePathSource::UpdateConfig does not scan the disk: version 2 appears at
    # the next file-system poll, so right after the reload it is unlisted, START or LOADING.
    if tfs.is_simulator:
        assert tfs.states(a).get(2) in (None, "START", "LOADING")
    tfs.wait_available(a, {1, 2})
    assert tfs.label_version(a, "canary") == 2
    # Moving an existing label to a version that is not AVAILABLE: still refused.
    assert_refused(
        tfs,
        server_config(
            model_config(a, tfs.base_path(a), specific=[1, 2, 3], labels={"stable": 3, "canary": 2})
        ),
        3,
        a,
    )
    assert tfs.label_version(a, "stable") == 1


def test_13_label_moved_to_available_version_takes_effect_at_once(start_tfs: StartTfs) -> None:
    tfs = start_tfs(
        lambda t: server_config(
            model_config(
                t.name("a"), t.base_path(t.name("a")), all_versions=True, labels={"stable": 1}
            )
        ),
        models={"a": [1, 2]},
    )
    a = tfs.name("a")
    by_version = {v: tfs.answer(f"/v1/models/{a}/versions/{v}") for v in (1, 2)}
    assert by_version[1] != by_version[2], "versions must answer differently for this test"
    assert tfs.answer(f"/v1/models/{a}/labels/stable") == by_version[1]
    tfs.apply(
        server_config(model_config(a, tfs.base_path(a), all_versions=True, labels={"stable": 2}))
    )
    # No waiting: right after the reload returns, the label answers from version 2.
    assert tfs.answer(f"/v1/models/{a}/labels/stable") == by_version[2]
    assert tfs.label_version(a, "stable") == 2
