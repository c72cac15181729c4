"""The systemd unit and its environment file, checked by systemd's own verifier.

``systemd-analyze verify`` needs the ExecStart binary to exist, so the unit is
verified with exactly one change: /usr/local/bin/tfs-reconciler (where a
package install puts the console script) is replaced by the console script
installed in this environment. Every other line is verified as shipped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "tfs-reconciler.service"
ENV_FILE = DEPLOY / "tfs-reconciler.env"
INSTALLED_BINARY = "/usr/local/bin/tfs-reconciler"
EXEC_START = f"ExecStart={INSTALLED_BINARY} run --git"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze is missing: apt-get install systemd"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def console_script() -> Path:
    script = Path(sys.executable).parent / "tfs-reconciler"
    assert script.is_file(), f"{script} missing: pip install -e . first"
    return script


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / UNIT.name
    copy.write_text(unit_text)
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def unit_as_verifiable() -> str:
    text = UNIT.read_text()
    assert text.count(EXEC_START) == 1, f"{UNIT} must start {EXEC_START!r}"
    return text.replace(INSTALLED_BINARY, str(console_script()))


def service_section() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[Service]" and stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition("=")
            values.setdefault(key, []).append(value)
    return values


def env_file() -> dict[str, str]:
    parser = ConfigParser(delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + ENV_FILE.read_text())
    return dict(parser["env"])


def test_the_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    result = verify(unit_as_verifiable(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_verifier_reports_a_broken_unit(tmp_path: Path) -> None:
    broken = unit_as_verifiable().replace("Restart=on-failure", "Restart=sometimes")
    result = verify(broken, tmp_path)
    assert "Failed to parse service restart specifier" in result.stderr


def test_the_verifier_reports_a_missing_binary(tmp_path: Path) -> None:
    result = verify(UNIT.read_text().replace(INSTALLED_BINARY, "/nonexistent/x"), tmp_path)
    assert result.returncode != 0
    assert "/nonexistent/x" in result.stderr


def test_the_service_tells_systemd_when_it_is_ready_and_alive() -> None:
    service = service_section()
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"] == ["30"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_the_service_may_write_only_the_models_and_state_folders() -> None:
    service = service_section()
    env = env_file()
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == [env["TFS_RECONCILER_MODELS_DIR"]]
    assert env["TFS_RECONCILER_STATE_DIR"] == f"/var/lib/{service['StateDirectory'][0]}"
    assert Path(env["TFS_RECONCILER_CONFIG"]).parent == Path(env["TFS_RECONCILER_MODELS_DIR"])


def test_the_environment_file_sets_only_tfs_reconciler_options() -> None:
    env = env_file()
    assert env
    assert all(name.startswith("TFS_RECONCILER_") for name in env)
    for value in env.values():
        assert shlex.split(value) == [value], f"{value!r} needs no quoting"


def test_the_unit_reads_the_environment_files_it_documents() -> None:
    assert service_section()["EnvironmentFile"] == [
        "-/etc/default/tfs-reconciler",
        "-/etc/tfs-reconciler/env",
    ]


def test_every_variable_in_the_environment_file_is_an_option_of_run() -> None:
    names = re.findall(r"^#?TFS_RECONCILER_([A-Z_]+)=", ENV_FILE.read_text(), re.MULTILINE)
    assert len(names) > 10
    script = str(console_script())
    help_text = "".join(
        subprocess.run(
            [script, *args, "--help"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        for args in ([], ["run"])
    )
    missing = [n for n in names if f"--{n.lower().replace('_', '-')}" not in help_text]
    assert missing == []
