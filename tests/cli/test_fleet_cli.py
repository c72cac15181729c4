"""The installed `tfs-reconciler` with --fleet, where no replica needs to answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = shutil.which("tfs-reconciler") or str(Path(sys.executable).parent / "tfs-reconciler")


def run(lab: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    clean.update(TFS_RECONCILER_ENV_FILE="", NO_COLOR="1", **env)
    return subprocess.run(
        [SCRIPT, *args], cwd=lab, env=clean, capture_output=True, text=True, timeout=60
    )


def fleet_file(lab: Path, text: str) -> Path:
    path = lab / "fleet.yaml"
    path.write_text(text)
    return path


def test_a_bad_fleet_file_is_refused_with_its_position_for_every_command(lab: Path) -> None:
    fleet_file(lab, "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n    - {name: a}\n")
    for command in ("diff", "apply", "status", "rollback"):
        result = run(lab, command, "--fleet", "fleet.yaml")
        assert result.returncode == 1, (command, result.stderr)
        assert "error: fleet.yaml:4:7: fleet.replicas[0]: missing required key 'rest'" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr


def test_the_fleet_file_comes_from_the_environment_too(lab: Path) -> None:
    fleet_file(lab, "apiVersion: tfs-reconciler/v1\nfleet: {}\n")
    result = run(lab, "diff", TFS_RECONCILER_FLEET="fleet.yaml")
    assert result.returncode == 1
    assert "fleet.yaml:2:8: fleet: no replicas" in result.stderr


def test_an_unreachable_replica_is_unknown_in_status(lab: Path) -> None:
    fleet_file(
        lab,
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        "    - {name: tfs-a, rest: 'http://127.0.0.1:9', config: models/models.config}\n",
    )
    result = run(lab, "status", "--fleet", "fleet.yaml", "--output", "json")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["state"] == "unknown"
    (replica,) = document["replicas"]
    assert replica["name"] == "tfs-a" and replica["tfs"]["reachable"] is False


def test_apply_with_every_replica_unreachable_changes_nothing_and_exits_1(lab: Path) -> None:
    fleet_file(
        lab,
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        "    - {name: tfs-a, rest: 'http://127.0.0.1:9', grpc: '127.0.0.1:9',"
        " config: models/models.config}\n",
    )
    before = (lab / "models" / "models.config").read_text()
    (lab / "desired_state" / "animals.yaml").write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
        "    labels: {stable: 3}\n"
    )
    result = run(lab, "apply", "--fleet", "fleet.yaml", "--reload", "grpc")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "halted before the first wave" in result.stderr and "nothing was changed" in result.stderr
    )
    assert (lab / "models" / "models.config").read_text() == before
    history = run(lab, "history", "--fleet", "fleet.yaml", "--output", "json")
    assert [r["outcome"] for r in json.loads(history.stdout)] == ["halted"]
    assert (lab / ".tfs-reconciler" / "fleet" / "history.jsonl").exists()


def test_rollback_without_a_rollout_says_so(lab: Path) -> None:
    fleet_file(
        lab,
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n    - {name: a, rest: 'http://h:1'}\n",
    )
    result = run(lab, "rollback", "--fleet", "fleet.yaml")
    assert result.returncode == 1
    assert "no fleet rollout to roll back" in result.stderr


def test_one_replica_with_an_unreadable_config_does_not_hide_the_others(lab: Path) -> None:
    (lab / "broken.config").write_bytes(b"model_config_list { config { name: \xff")
    fleet_file(
        lab,
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n"
        "    - {name: tfs-a, rest: 'http://127.0.0.1:9', config: models/models.config}\n"
        "    - {name: tfs-b, rest: 'http://127.0.0.1:10', config: broken.config}\n",
    )
    result = run(lab, "status", "--fleet", "fleet.yaml", "--output", "json")
    assert result.returncode == 1, result.stderr
    first, second = json.loads(result.stdout)["replicas"]
    assert first["name"] == "tfs-a" and first["models"]
    assert second["name"] == "tfs-b" and "broken.config" in second["last_error"]


def test_validate_checks_the_fleet_file_and_the_desired_state_together(lab: Path) -> None:
    fleet_file(
        lab,
        "apiVersion: tfs-reconciler/v1\nfleet:\n  replicas:\n    - {name: a, rest: 'http://h:1'}\n",
    )
    result = run(lab, "validate", "--fleet", "fleet.yaml")
    assert result.returncode == 0, result.stderr
    assert "fleet.yaml: valid (1 replica(s) listed: a)" in result.stdout
    (lab / "desired_state" / "animals.yaml").write_text("apiVersion: v2\nmodels: {}\n")
    fleet_file(lab, "apiVersion: tfs-reconciler/v1\nfleet: {rollout: {canary: -1}}\n")
    result = run(lab, "validate", "--fleet", "fleet.yaml")
    assert result.returncode == 1
    assert "fleet.yaml:2:27: fleet.rollout.canary: -1 is out of range" in result.stderr
    assert "animals.yaml:1:13: apiVersion: must be tfs-reconciler/v1" in result.stderr
