"""Printing a plan: plain words and a unified diff for people, one JSON document for programs."""

from __future__ import annotations

import json

from reconciler.desired import DesiredState, parse_documents
from reconciler.observe import DiskState, LiveStatus, ModelDir, Observed, VersionDir
from reconciler.plan import Plan, plan
from reconciler.render import plan_json, plan_text
from reconciler.tfs_config import parse_config
from unit.lab import LAB_CONFIG


def state(
    spec: str = "versions: [1, 2, 3]\n    labels: {deprecated: 1, stable: 2, canary: 3}",
) -> DesiredState:
    text = f"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    {spec}\n"
    return parse_documents([("desired.yaml", text.encode())])


def lab_plan(
    spec: str | None = None, *, versions: tuple[int, ...] = (1, 2, 3), config: str = LAB_CONFIG
) -> Plan:
    folder = ModelDir(
        "animals",
        "/host/animals",
        True,
        tuple(VersionDir(v, f"/host/animals/{v}", True) for v in versions),
    )
    observed = Observed(DiskState((folder,)), parse_config(config))
    return plan(state(spec) if spec else state(), observed)


PROMOTE = "versions: [1, 2, 3]\n    labels: {deprecated: 1, stable: 3, canary: 3}"


def test_in_sync_plan_says_so() -> None:
    assert plan_text(lab_plan(), "models.config") == (
        "No changes: models.config matches the desired state.\n"
        "\n"
        "Live: TFS serves what models.config says.\n"
    )


def test_label_move_is_written_like_terraform_plan_with_a_config_diff() -> None:
    text = plan_text(lab_plan(PROMOTE), "models/models.config")
    lines = text.splitlines()
    assert lines[:2] == ["Planned changes:", "  ~ animals: label stable 2 -> 3"]
    assert "--- models/models.config (current)" in lines
    assert "+++ models/models.config (planned)" in lines
    assert "-      value: 2" in lines
    assert "+      value: 3" in lines


def test_load_and_unload_steps_use_plus_and_minus() -> None:
    text = plan_text(
        lab_plan("versions: [2, 3, 4]\n    labels: {stable: 4}", versions=(1, 2, 3, 4)),
        "models.config",
    )
    assert "  + animals: load version 4\n" in text
    assert "  - animals: unload version 1\n" in text
    assert (
        "  (applied in 3 phases, so that no label points at a version before it is AVAILABLE)\n"
        in text
    )


def test_no_colour_unless_asked() -> None:
    assert "\x1b[" not in plan_text(lab_plan(PROMOTE), "models.config")
    coloured = plan_text(lab_plan(PROMOTE), "models.config", colour=True)
    assert "\x1b[33m  ~ animals: label stable 2 -> 3\x1b[0m" in coloured


def test_blocking_problems_come_first() -> None:
    text = plan_text(lab_plan(versions=(1, 2)), "models.config")
    assert text.startswith(
        "Cannot plan: fix these first.\n"
        "  desired.yaml:4:15: models.animals.versions: version 3 is not on disk:"
        " /host/animals/3 does not exist\n"
    )


def test_canonical_rewrite_without_served_change_is_named() -> None:
    config = LAB_CONFIG.replace("    model_platform: 'tensorflow'\n", "")
    text = plan_text(lab_plan(config=config), "models.config")
    assert text.startswith(
        "Planned changes: models.config is rewritten in canonical form (nothing served changes).\n"
    )


def test_unmanaged_model_is_reported() -> None:
    config = LAB_CONFIG.replace(
        "}\n}\n", "}\n  config { name: 'old' base_path: '/models/old' }\n}\n"
    )
    assert "  (unmanaged: old is in models.config but in no desired-state file;" in plan_text(
        lab_plan(config=config), "models.config"
    )


def test_live_note_replaces_the_live_summary() -> None:
    text = plan_text(lab_plan(), "models.config", live_note="Live: unknown (refused)")
    assert text.endswith("Live: unknown (refused)\n")


def test_json_is_one_document_with_the_same_content() -> None:
    result = lab_plan(PROMOTE)
    document = json.loads(json.dumps(plan_json(result, "models.config", {"asked": False})))
    assert document["in_sync"] is False
    assert document["changes_config"] is True
    assert document["blocked"] is False
    assert document["phases"] == 1
    assert [s["text"] for s in document["steps"]] == ["~ animals: label stable 2 -> 3"]
    assert document["steps"][0] == {
        "action": "move_label",
        "model": "animals",
        "version": 3,
        "label": "stable",
        "old": "2",
        "new": "3",
        "text": "~ animals: label stable 2 -> 3",
    }
    assert parse_config(document["config"]["planned"]) == result.target
    assert document["config"]["diff"].startswith("--- models.config (current)\n")
    assert document["live"] == {"asked": False}


def test_json_problems_carry_file_line_column_and_field() -> None:
    document = plan_json(lab_plan(versions=(1, 2)), "models.config", {})
    assert document["blocked"] is True
    assert document["problems"][0] == {
        "file": "desired.yaml",
        "line": 4,
        "column": 15,
        "field": "models.animals.versions",
        "message": "version 3 is not on disk: /host/animals/3 does not exist",
        "text": "desired.yaml:4:15: models.animals.versions: version 3 is not on disk:"
        " /host/animals/3 does not exist",
    }


def test_rendering_the_same_plan_twice_is_byte_identical() -> None:
    first, second = lab_plan(PROMOTE), lab_plan(PROMOTE)
    assert plan_text(first, "m") == plan_text(second, "m")
    assert json.dumps(plan_json(first, "m", {})) == json.dumps(plan_json(second, "m", {}))


def test_unreachable_live_status_is_not_drift_in_json() -> None:
    folder = ModelDir(
        "animals", "/h", True, tuple(VersionDir(v, f"/h/{v}", True) for v in (1, 2, 3))
    )
    observed = Observed(
        DiskState((folder,)), parse_config(LAB_CONFIG), LiveStatus(False, error="x")
    )
    assert plan_json(plan(state(), observed), "m", {})["drift"] == []
