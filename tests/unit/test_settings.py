"""Where every command finds the settings the service uses."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.settings import DEFAULT_ENV_FILES, settings_environment

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "tfs-reconciler.service"


def test_the_default_env_files_are_the_ones_the_unit_reads_in_its_order() -> None:
    named = re.findall(r"^EnvironmentFile=-?(\S+)$", UNIT.read_text(), re.MULTILINE)
    assert tuple(named) == DEFAULT_ENV_FILES


def test_the_service_files_are_read_a_later_one_winning_and_the_environment_over_both(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "default", tmp_path / "env"
    first.write_text("TFS_RECONCILER_MODELS_DIR=/a\nTFS_RECONCILER_DESIRED=/d\nOTHER=x\n")
    second.write_text("# comment\nTFS_RECONCILER_MODELS_DIR='/b'\n")
    found = settings_environment(
        {"TFS_RECONCILER_DESIRED": "/mine", "PATH": "/bin"}, (str(first), str(second))
    )
    assert found.variables == {"TFS_RECONCILER_MODELS_DIR": "/b", "TFS_RECONCILER_DESIRED": "/mine"}
    assert found.files == (str(first), str(second))
    assert found.from_files == ("TFS_RECONCILER_MODELS_DIR",)


def test_missing_default_files_are_no_settings(tmp_path: Path) -> None:
    found = settings_environment({}, (str(tmp_path / "absent"),))
    assert (found.variables, found.files, found.unreadable) == ({}, (), ())


def test_the_env_file_variable_names_the_only_file_read_and_empty_names_none(
    tmp_path: Path,
) -> None:
    default, chosen = tmp_path / "default", tmp_path / "chosen"
    default.write_text("TFS_RECONCILER_MODELS_DIR=/default\n")
    chosen.write_text("TFS_RECONCILER_MODELS_DIR=/chosen\n")
    defaults = (str(default),)
    picked = settings_environment({"TFS_RECONCILER_ENV_FILE": str(chosen)}, defaults)
    assert picked.variables["TFS_RECONCILER_MODELS_DIR"] == "/chosen"
    none = settings_environment({"TFS_RECONCILER_ENV_FILE": ""}, defaults)
    assert none.files == () and "TFS_RECONCILER_MODELS_DIR" not in none.variables


def test_an_env_file_it_cannot_read_is_reported(tmp_path: Path) -> None:
    found = settings_environment({}, (str(tmp_path),))  # a folder: EISDIR
    assert found.files == ()
    assert found.unreadable == (f"{tmp_path}: Is a directory",)
