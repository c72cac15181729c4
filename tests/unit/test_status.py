"""The status document and its text form (pure: built from plan values)."""

from __future__ import annotations

from reconciler.desired import parse_documents
from reconciler.observe import DiskState, LiveStatus, ModelDir, Observed, VersionDir
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
