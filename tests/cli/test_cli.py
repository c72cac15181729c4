"""The installed `tfs-reconciler` command on private copies of the lab, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.tfs_config import parse_config

SCRIPT = shutil.which("tfs-reconciler") or str(Path(sys.executable).parent / "tfs-reconciler")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run(lab: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the console script in the lab folder, TFS unreachable, no colour."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TFS_RECONCILER_")}
    port = _closed_port()
    clean.update(
        TFS_RECONCILER_REST_URL=f"http://127.0.0.1:{port}",
        TFS_RECONCILER_GRPC_TARGET=f"127.0.0.1:{port}",
        TFS_RECONCILER_ENV_FILE="",  # not this machine's /etc/default/tfs-reconciler
        NO_COLOR="1",
    )
    clean.update(env)
    if not clean["NO_COLOR"]:  # NO_COLOR="" asks for the command's own choice
        del clean["NO_COLOR"]
    return subprocess.run(
        [SCRIPT, *args], cwd=lab, env=clean, capture_output=True, text=True, timeout=60
    )


def config(lab: Path) -> Path:
    return lab / "models" / "models.config"


def desired(lab: Path) -> Path:
    return lab / "desired_state" / "animals.yaml"


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# --- validate ------------------------------------------------------------------------------------


def test_validate_accepts_the_lab(lab: Path) -> None:
    result = run(lab, "validate")
    assert (result.returncode, result.stdout) == (0, "desired_state: valid (1 model: animals)\n")


BAD_INPUTS = {
    "unknown key": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1]\n    lables: {}\n",
        "animals.yaml:5:5: models.animals.lables: unknown key 'lables'",
    ),
    "duplicate key": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals: {versions: [1]}\n"
        b"  animals: {versions: [2]}\n",
        "animals.yaml:4:3: models.animals: duplicate key 'animals' (first at line 3)",
    ),
    "string version": (
        b'apiVersion: tfs-reconciler/v1\nmodels:\n  animals: {versions: ["2"]}\n',
        "animals.yaml:3:24: models.animals.versions[0]: '2' (a string) is not an integer",
    ),
    "label on unserved version": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3]\n"
        b"    labels: {stable: 9}\n",
        "animals.yaml:5:22: models.animals.labels.stable: version 9 is not served"
        " (served: 1, 2, 3)",
    ),
    "model name with a slash": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n  ani/mals: {versions: [1]}\n",
        "animals.yaml:3:3: models.ani/mals: 'ani/mals' is not a valid model name.",
    ),
    "base_path outside the serving root": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals: {versions: [1], base_path: /etc}\n",
        "animals.yaml:3:39: models.animals.base_path: '/etc' is outside the serving root",
    ),
    "not a mapping": (b"- animals\n", "animals.yaml:1:1: expected a mapping"),
    "empty file": (b"", "animals.yaml:1:1: empty file: expected a desired-state document"),
    "non-UTF-8": (b"apiVersion: \xff\n", "animals.yaml:1:13: not UTF-8 text"),
    "alias bomb": (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + b"".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n".encode()
            for i in range(8)
        ),
        "animals.yaml:5:4: document expands to more than 100000 values (aliases?)",
    ),
    "oversized": (b"#" * (1024 * 1024 + 10), "animals.yaml: file is larger than the limit"),
    "octal version": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n  animals: {versions: [010]}\n",
        "animals.yaml:3:24: models.animals.versions[0]: 010 is ambiguous: YAML 1.1 reads it as"
        " 8 (octal); write the version in plain decimal",
    ),
    "tab indentation": (
        b"apiVersion: tfs-reconciler/v1\nmodels:\n\tanimals: {versions: [1]}\n",
        "animals.yaml:3:1: invalid YAML: while scanning for the next token (line 3), found"
        " character that cannot start any token (a tab: YAML indents with spaces only)",
    ),
    "base_path of 64 emoji": (
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals: {versions: [1], base_path: "
        f"{chr(0x1F600) * 64}}}\n".encode(),
        "animals.yaml:3:39: models.animals.base_path: '/models/"
        + chr(0x1F600) * 24
        + "[... 40 more characters cut]' is not a path a file system can hold",
    ),
    "nested too deep": (
        b"apiVersion: tfs-reconciler/v1\nmodels: " + b"[" * 100 + b"]" * 100 + b"\n",
        "animals.yaml:2:73: document nests deeper than 64 levels",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_each_bad_input_gets_its_one_line_error_and_exit_1(lab: Path, case: str) -> None:
    raw, expected = BAD_INPUTS[case]
    desired(lab).write_bytes(raw)
    result = run(lab, "validate")
    no_traceback(result)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: desired_state/")
    assert expected in line


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_apply_on_each_bad_input_leaves_models_config_byte_equal(lab: Path, case: str) -> None:
    before = config(lab).read_bytes()
    desired(lab).write_bytes(BAD_INPUTS[case][0])
    result = run(lab, "apply")
    no_traceback(result)
    assert result.returncode == 1
    assert BAD_INPUTS[case][1] in result.stderr
    assert config(lab).read_bytes() == before


def test_a_desired_file_linked_to_a_secret_or_a_fifo_is_refused_unread(lab: Path) -> None:
    secret = lab / "secrets.env"
    secret.write_text("DB_PASSWORD=hunter2-correct-horse\n")
    desired(lab).unlink()
    desired(lab).symlink_to(secret)
    os.mkfifo(lab / "fifo")
    (lab / "desired_state" / "plants.yaml").symlink_to(lab / "fifo")
    os.mkfifo(lab / "desired_state" / "fifo.yaml")
    result = run(lab, "validate")
    no_traceback(result)
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr
    assert result.stderr.count("a link to a file outside desired_state: not read") == 2
    assert "desired_state/fifo.yaml: cannot read: not a regular file" in result.stderr


@pytest.mark.parametrize("command", ["diff", "apply"])
def test_bad_input_leaves_models_config_byte_equal(lab: Path, command: str) -> None:
    before = config(lab).read_bytes()
    desired(lab).write_bytes(BAD_INPUTS["string version"][0])
    result = run(lab, command)
    no_traceback(result)
    assert result.returncode == 1
    assert "'2' (a string) is not an integer" in result.stderr
    assert config(lab).read_bytes() == before


def test_all_problems_are_reported_at_once(lab: Path) -> None:
    desired(lab).write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2.0]\n"
        "    labels: {stable: 9}\n    colour: red\n"
    )
    (lab / "desired_state" / "more.yaml").write_text("- not a mapping\n")
    result = run(lab, "validate")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 3


def test_missing_desired_folder_is_an_error_not_a_traceback(lab: Path) -> None:
    result = run(lab, "validate", "nowhere")
    no_traceback(result)
    assert (result.returncode, result.stderr) == (1, "error: nowhere: no such file or folder\n")


# --- diff and apply: the done criteria -----------------------------------------------------------


def test_diff_on_the_untouched_lab_is_in_sync(lab: Path) -> None:
    result = run(lab, "diff")
    assert result.returncode == 0
    assert result.stdout.startswith("No changes: models.config matches the desired state.\n")
    assert "Live: unknown" in result.stdout


def test_moving_stable_to_3_plans_applies_and_then_is_in_sync(lab: Path) -> None:
    lab = lab
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))

    planned = run(lab, "diff")
    assert planned.returncode == 2, planned.stderr
    assert "  ~ animals: label stable 2 -> 3\n" in planned.stdout
    assert "+      value: 3\n" in planned.stdout

    applied = run(lab, "apply")
    assert applied.returncode == 0, applied.stderr
    assert parse_config(config(lab).read_text()).models[0].label_map == {
        "deprecated": 1,
        "stable": 3,
        "canary": 3,
    }

    again = run(lab, "diff")
    assert again.returncode == 0, again.stdout
    assert again.stdout.startswith("No changes")

    written = config(lab).stat().st_mtime_ns
    second = run(lab, "apply")
    assert second.returncode == 0
    assert config(lab).stat().st_mtime_ns == written
    assert second.stdout.startswith(
        "No changes: models.config already matches the desired state (TFS was not asked"
    )


def test_apply_keeps_the_previous_config_as_last_known_good(lab: Path) -> None:
    original = config(lab).read_text()
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    assert run(lab, "apply").returncode == 0
    saved = lab / "models" / ".tfs-reconciler" / "last-known-good.config"
    assert saved.read_text() == original


def test_version_missing_on_disk_blocks_diff_and_apply(lab: Path) -> None:
    before = config(lab).read_bytes()
    desired(lab).write_text(
        "apiVersion: tfs-reconciler/v1\nmodels:\n  animals:\n    versions: [1, 2, 3, 4]\n"
    )
    message = (
        "desired_state/animals.yaml:4:15: models.animals.versions: version 4 is not on disk:"
        " models/animals/4 does not exist"
    )
    planned = run(lab, "diff")
    assert planned.returncode == 1
    assert message in planned.stdout
    applied = run(lab, "apply")
    assert applied.returncode == 1
    assert f"error: {message}" in applied.stderr
    assert config(lab).read_bytes() == before


def test_diff_has_no_colour_off_a_terminal(lab: Path) -> None:
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    result = run(lab, "diff", NO_COLOR="")
    assert result.returncode == 2
    assert "\x1b[" not in result.stdout


def test_diff_json_is_one_json_document(lab: Path) -> None:
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    result = run(lab, "diff", "--output", "json")
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert [s["text"] for s in document["steps"]] == ["~ animals: label stable 2 -> 3"]
    assert document["live"]["reachable"] is False


def test_diff_output_is_byte_identical_run_to_run(lab: Path) -> None:
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    first = run(lab, "diff", "--output", "json", "--rest-url", "http://127.0.0.1:1")
    second = run(lab, "diff", "--output", "json", "--rest-url", "http://127.0.0.1:1")
    assert first.stdout == second.stdout


def test_options_come_from_the_environment(lab: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    result = run(lab, "diff", TFS_RECONCILER_DESIRED=str(elsewhere))
    assert result.returncode == 2
    assert "~ animals: label stable 2 -> 3" in result.stdout


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a usage error, which must exit 1 (2 means changes pending)."""
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("tfs-reconciler") and ": error: " in last, result.stderr
    return last


def test_reload_choice_from_the_environment_is_checked(lab: Path) -> None:
    before = config(lab).read_bytes()
    line = usage_error(run(lab, "apply", TFS_RECONCILER_RELOAD="bogus"))
    assert line.endswith(
        "error: TFS_RECONCILER_RELOAD='bogus': invalid choice"
        " (choose from auto, grpc, poll, restart, none)"
    )
    assert config(lab).read_bytes() == before


def test_the_command_line_overrides_a_bad_environment_value(lab: Path) -> None:
    result = run(lab, "apply", "--reload", "none", TFS_RECONCILER_RELOAD="bogus")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--log-level", "bogus", "diff"], {}, "argument --log-level: must be one of debug,"),
        (["diff"], {"TFS_RECONCILER_LOG_LEVEL": "bogus"}, "TFS_RECONCILER_LOG_LEVEL: must be"),
        (["apply", "--timeout", "-5"], {}, "argument --timeout: must be a finite number of"
         " seconds above 0, not '-5'"),
        (["apply", "--timeout", "nan"], {}, "argument --timeout: must be a finite"),
        (["apply", "--timeout", "inf"], {}, "argument --timeout: must be a finite"),
        (["apply", "--timeout", "0"], {}, "argument --timeout: must be a finite"),
        (["apply"], {"TFS_RECONCILER_TIMEOUT": "nan"}, "TFS_RECONCILER_TIMEOUT: must be a finite"),
        (["rollback"], {"TFS_RECONCILER_TIMEOUT": "soon"}, "TFS_RECONCILER_TIMEOUT: not a number"),
        (["run", "--resync", "-1"], {}, "argument --resync: must be a finite"),
        (["run"], {"TFS_RECONCILER_RESYNC": "nan"}, "TFS_RECONCILER_RESYNC: must be a finite"),
        (["run", "--git-interval", "nan"], {}, "argument --git-interval: must be a finite"),
        (["run", "--debounce", "-0.1"], {}, "argument --debounce: must be a finite number of"
         " seconds, 0 or more"),
        (["run", "--resync-models", "0"], {}, "argument --resync-models: must be 1 or more"),
        (["run"], {"TFS_RECONCILER_RESYNC_MODELS": "x"}, "TFS_RECONCILER_RESYNC_MODELS: not a"),
        (["run"], {"TFS_RECONCILER_GIT": "maybe"}, "TFS_RECONCILER_GIT='maybe': expected one of"),
        (["apply"], {"TFS_RECONCILER_ALLOW_RESTART": "si"}, "TFS_RECONCILER_ALLOW_RESTART='si'"),
        (["apply"], {"TFS_RECONCILER_NO_VERIFY": "maybe"}, "TFS_RECONCILER_NO_VERIFY='maybe'"),
        (["apply", "--grpc-target", "nohostport"], {}, "--grpc-target: not host:port"),
        (["apply"], {"TFS_RECONCILER_GRPC_TARGET": "h:99999"}, "TFS_RECONCILER_GRPC_TARGET: not"),
        (["diff", "--rest-url", "ftp://x"], {}, "argument --rest-url: not an http(s) URL"),
        (["diff"], {"TFS_RECONCILER_REST_URL": "ftp://x"}, "TFS_RECONCILER_REST_URL: not an"),
    ],
)  # fmt: skip
def test_unusable_option_values_are_usage_errors(
    lab: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    assert expected in usage_error(run(lab, *args, **env))


def test_log_level_is_read_in_any_case(lab: Path) -> None:
    assert run(lab, "--log-level", "WARNING", "diff").returncode == 0
    assert run(lab, "diff", TFS_RECONCILER_LOG_LEVEL="Debug").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["apply", "--timeout", "0.01"],
        ["run", "--resync", "0.01", "--git-interval", "0.5", "--debounce", "0", "--help"],
    ],
)
def test_small_positive_times_are_accepted(lab: Path, args: list[str]) -> None:
    result = run(lab, *args)
    no_traceback(result)
    assert result.returncode == 0, result.stderr


def test_history_survives_a_line_torn_by_a_crash(lab: Path) -> None:
    state = lab / "models" / ".tfs-reconciler"
    state.mkdir(exist_ok=True)
    with (state / "history.jsonl").open("a") as history:
        history.write('{"id": 1, "time": "x", "outco')
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    assert run(lab, "apply").returncode == 0
    listed = run(lab, "history")
    assert listed.returncode == 0
    assert "label stable 2 -> 3" in listed.stdout, listed.stdout


@pytest.mark.parametrize("line", ["[]", "[" * 100_000 + "]" * 100_000, '{"id": "1"}'])
def test_history_status_and_rollback_survive_a_line_of_the_wrong_shape(
    lab: Path, line: str
) -> None:
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    assert run(lab, "apply").returncode == 0
    with (lab / "models" / ".tfs-reconciler" / "history.jsonl").open("a") as history:
        history.write(line + "\n")
    no_traceback(run(lab, "status", "--metrics-addr", f"127.0.0.1:{_closed_port()}"))
    rolled = run(lab, "rollback")
    no_traceback(rolled)
    assert rolled.returncode == 0, rolled.stderr  # back to the config the apply replaced
    listed = run(lab, "history")
    assert listed.returncode == 0 and "label stable 2 -> 3" in listed.stdout, listed.stdout


def test_status_without_a_daemon_or_tfs_says_unknown_and_exits_1(lab: Path) -> None:
    result = run(lab, "status", "--metrics-addr", f"127.0.0.1:{_closed_port()}")
    assert result.returncode == 1, result.stdout
    assert "in sync" not in result.stdout.splitlines()[0], result.stdout
    assert "UNKNOWN" in result.stdout and "TFS: unreachable" in result.stdout
    document = json.loads(
        run(
            lab, "status", "--metrics-addr", f"127.0.0.1:{_closed_port()}", "--output", "json"
        ).stdout
    )
    assert (document["in_sync"], document["state"]) == (False, "unknown")


def test_every_command_finds_the_services_env_file_without_sourcing_it(
    lab: Path, tmp_path: Path
) -> None:
    """The service's settings live in an env file (the unit's EnvironmentFile=); an operator's
    command in any folder answers about the same models.config, and says where from."""
    service = tmp_path / "tfs-reconciler"
    service.write_text(
        f"TFS_RECONCILER_DESIRED={lab / 'desired_state'}\n"
        f"TFS_RECONCILER_MODELS_DIR={lab / 'models'}\n"
        f"TFS_RECONCILER_STATE_DIR={tmp_path / 'state'}\n"
        "TFS_RECONCILER_SERVING_ROOT=/models\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    env = {"TFS_RECONCILER_ENV_FILE": str(service)}

    diff = run(elsewhere, "diff", **env)
    assert diff.returncode == 2, diff.stderr
    assert "label stable 2 -> 3" in diff.stdout
    assert f"settings: {service} (desired, models-dir, serving-root, state-dir;" in diff.stderr
    assert run(elsewhere, "apply", **env).returncode == 0
    history = run(elsewhere, "history", **env)
    assert "label stable 2 -> 3" in history.stdout, history.stdout + history.stderr
    status = run(elsewhere, "status", "--metrics-addr", f"127.0.0.1:{_closed_port()}", **env)
    assert f"models.config: {os.path.realpath(config(lab))}" in status.stdout
    # The command line and the process's own variables win over the file.
    other = run(elsewhere, "history", "--state-dir", str(tmp_path / "none"), **env)
    assert "No applies recorded" in other.stdout
    own = run(elsewhere, "history", TFS_RECONCILER_STATE_DIR=str(tmp_path / "none"), **env)
    assert "No applies recorded" in own.stdout


def test_an_env_file_it_cannot_read_is_said_not_silently_skipped(lab: Path, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder-not-a-file"
    folder.mkdir()
    result = run(lab, "diff", TFS_RECONCILER_ENV_FILE=str(folder))
    assert f"warning: settings not read from {folder}" in result.stderr, result.stderr


# --- no input crashes the command ----------------------------------------------------------------

NASTY = [
    b"\x00\x01\x02",
    b"[" * 3000,
    b"!!timestamp soon",
    b"apiVersion: tfs-reconciler/v1\nmodels: {m: {versions: [!!int '']}}\n",
    b"\xef\xbb\xbf\xff\xfe",
    b"---\n---\n",
    b"~\n",
    b"&a [*a]\n",
]


@pytest.mark.parametrize("raw", NASTY)
def test_validate_never_prints_a_traceback(lab: Path, raw: bytes) -> None:
    desired(lab).write_bytes(raw)
    result = run(lab, "validate")
    no_traceback(result)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.binary(max_size=200))
def test_validate_on_random_bytes_exits_0_or_1(lab: Path, raw: bytes) -> None:
    desired(lab).write_bytes(raw)
    result = run(lab, "validate")
    no_traceback(result)
    assert result.returncode in (0, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model_config_list { config { nmae: 'animals' } }\n", "not a valid ModelServerConfig"),
        ("custom_model_config { type_url: 'x/y' }\n", "uses custom_model_config"),
        ("\udcff", "not UTF-8 text"),
    ],
    ids=["unparsable", "custom", "non-utf8"],
)
def test_models_config_tfs_cannot_take_is_left_byte_equal(
    lab: Path, text: str, expected: str
) -> None:
    config(lab).write_bytes(text.encode("utf-8", "surrogateescape"))
    before = config(lab).read_bytes()
    planned = run(lab, "diff")
    no_traceback(planned)
    assert planned.returncode == 1
    assert expected in planned.stdout + planned.stderr
    applied = run(lab, "apply")
    no_traceback(applied)
    assert applied.returncode == 1
    assert expected in applied.stderr
    assert config(lab).read_bytes() == before


def test_diff_says_when_writing_loses_the_files_comments_and_layout(lab: Path) -> None:
    desired(lab).write_text(desired(lab).read_text().replace("stable: 2", "stable: 3"))
    note = "models.config is written in canonical form: its comments and layout are not kept"
    assert note in run(lab, "diff").stdout  # the lab's hand-written file
    assert run(lab, "apply").returncode == 0
    desired(lab).write_text(desired(lab).read_text().replace("stable: 3", "stable: 2"))
    planned = run(lab, "diff")
    assert planned.returncode == 2 and note not in planned.stdout  # already canonical
