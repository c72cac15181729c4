"""The status document and its text form (pure: built from plan values)."""

from __future__ import annotations

from reconciler.desired import parse_documents
from reconciler.observe import (
    DiskState,
    LiveModel,
    LiveStatus,
    LiveVersion,
    ModelDir,
    Observed,
    VersionDir,
)
from reconciler.plan import plan
from reconciler.status import status_document, status_text
from reconciler.tfs_config import parse_config
from unit.lab import LAB_CONFIG

OLD_MODEL = "config { name: 'old' base_path: '/models/old' }"


def test_the_text_names_unmanaged_models_and_the_models_config() -> None:
    desired = parse_documents(
        [
            (
                "desired.yaml",
                b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
                b"    labels: {deprecated: 1, stable: 2, canary: 3}\n",
            )
        ]
    )
    folder = ModelDir(
        "animals",
        "/host/animals",
        True,
        tuple(VersionDir(v, f"/host/animals/{v}", True) for v in (1, 2, 3)),
    )
    config = parse_config(LAB_CONFIG.replace("}\n}\n", f"}}\n  {OLD_MODEL}\n}}\n"))
    observed = Observed(DiskState((folder,)), config, LiveStatus(False, error="refused"))
    document = status_document(
        desired,
        observed,
        plan(desired, observed),
        last=None,
        last_error=None,
        source="cli",
        config="/srv/models/models.config",
    )
    text = status_text(document)
    assert "  models.config: /srv/models/models.config\n" in text
    assert "  old: in models.config, in no desired-state file (unmanaged)\n" in text
    assert "  TFS: unreachable (refused)\n" in text


def _lab_document(live: LiveStatus | None, last_error: str | None = None) -> dict[str, object]:
    desired = parse_documents(
        [
            (
                "desired.yaml",
                b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
                b"    labels: {deprecated: 1, stable: 2, canary: 3}\n",
            )
        ]
    )
    folder = ModelDir(
        "animals",
        "/host/animals",
        True,
        tuple(VersionDir(v, f"/host/animals/{v}", True) for v in (1, 2, 3)),
    )
    observed = Observed(DiskState((folder,)), parse_config(LAB_CONFIG), live)
    return status_document(
        desired, observed, plan(desired, observed), last=None, last_error=last_error, source="cli"
    )


def test_with_tfs_unreachable_the_state_is_unknown_never_in_sync() -> None:
    document = _lab_document(LiveStatus(False, error="connection refused"))
    assert document["in_sync"] is False
    assert document["state"] == "unknown"
    assert status_text(document).startswith("tfs-reconciler status (cli): UNKNOWN")


def test_with_tfs_serving_the_config_the_state_is_in_sync() -> None:
    animals = LiveModel(
        "animals",
        True,
        tuple(LiveVersion(v, "AVAILABLE") for v in (1, 2, 3)),
        (("canary", 3), ("deprecated", 1), ("stable", 2)),
    )
    document = _lab_document(LiveStatus(True, (animals,)))
    assert (document["in_sync"], document["state"]) == (True, "in_sync")
    failed = _lab_document(LiveStatus(True, (animals,)), last_error="the last pass failed")
    assert (failed["in_sync"], failed["state"]) == (False, "not_in_sync")
