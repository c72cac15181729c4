"""The sidecar's refusals: single-file mounts (mount table) and TFS's flags (command line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired import parse_documents
from reconciler.sidecar import (
    FlagCheck,
    SidecarError,
    TfsFlags,
    find_tfs_args,
    flag_problems,
    mount_points,
    parse_tfs_flags,
    refuse_single_file_mounts,
    single_file_mounts,
)

# A pod's reconciler container: the ConfigMap as a folder, the emptyDir, and a subPath mount
# of one key (a file bind-mounted by itself), as /proc/self/mountinfo lists them.
MOUNTINFO = """\
1510 1401 0:310 / / rw,relatime master:455 - overlay overlay rw,lowerdir=/var/lib/x
1511 1510 0:312 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1520 1510 259:1 /pods/p/volumes/cm/desired /desired ro,relatime - ext4 /dev/root rw
1521 1510 259:1 /pods/p/volumes/ed/config /config rw,relatime - ext4 /dev/root rw
1522 1510 259:1 /pods/p/volume-subpaths/d/r/0 /pinned/animals.yaml ro,relatime - ext4 /dev/root rw
1523 1510 259:1 /var/lib/kubelet/pods/p/etc-hosts /etc/hosts rw,relatime - ext4 /dev/root rw
1524 1510 259:1 /x /with\\040space/models.config rw,relatime - ext4 /dev/root rw
"""

FOLDERS = {"/", "/proc", "/desired", "/config"}


def is_dir(path: str) -> bool:
    return path in FOLDERS


def test_mount_points_are_read_with_their_escapes_undone() -> None:
    points = mount_points(MOUNTINFO)
    assert points[2:4] == ["/desired", "/config"]
    assert points[-1] == "/with space/models.config"


@pytest.mark.parametrize(
    ("watched", "found"),
    [
        (["/desired", "/config/models.config"], []),  # folders: what the kubelet updates
        (["/pinned/animals.yaml"], ["/pinned/animals.yaml"]),  # a subPath mount of one key
        (["/pinned"], ["/pinned/animals.yaml"]),  # a folder holding one
        (["/with space/models.config"], ["/with space/models.config"]),
        (["/etc/hostsfile"], []),  # a name that only starts like a mount point
    ],
)
def test_single_file_mounts(watched: list[str], found: list[str]) -> None:
    points = mount_points(MOUNTINFO)
    assert single_file_mounts(points, [Path(p) for p in watched], is_dir) == found


def test_a_single_file_mount_is_refused_naming_it_and_the_way_out() -> None:
    with pytest.raises(SidecarError) as raised:
        refuse_single_file_mounts(
            Path("/pinned/animals.yaml"), Path("/config/models.config"), MOUNTINFO, is_dir
        )
    message = str(raised.value)
    assert message.startswith("/pinned/animals.yaml: a single-file mount")
    assert "Mount the ConfigMap" in message
    refuse_single_file_mounts(Path("/desired"), Path("/config/models.config"), MOUNTINFO, is_dir)


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        ([], TfsFlags()),
        (
            [
                "--model_config_file=/config/models.config",
                "--allow_version_labels_for_unavailable_models",
            ],
            TfsFlags("/config/models.config", True, 0),
        ),
        (["--allow_version_labels_for_unavailable_models=TRUE"], TfsFlags(None, True, 0)),
        (["--allow_version_labels_for_unavailable_models=1"], TfsFlags(None, True, 0)),
        (
            [
                "--allow_version_labels_for_unavailable_models",
                "--allow_version_labels_for_unavailable_models=false",
            ],
            TfsFlags(None, False, 0),
        ),  # the last one wins
        (["-allow_version_labels_for_unavailable_models"], TfsFlags()),  # one dash: not TFS's
        (["--allow_version_labels_for_unavailable_models", "true"], TfsFlags(None, True, 0)),
        (["--model_config_file_poll_wait_seconds=60"], TfsFlags(None, False, 60)),
        (["--model_config_file_poll_wait_seconds", "60"], TfsFlags()),  # no '=': not a value
        (["--model_config_file_poll_wait_seconds=0"], TfsFlags()),
    ],
)
def test_tfs_flags_are_parsed_as_tfs_parses_them(args: list[str], flags: TfsFlags) -> None:
    assert parse_tfs_flags(args) == flags


LABELLED = parse_documents(
    [("d.yaml", b"apiVersion: tfs-reconciler/v1\nmodels:\n  a:\n    versions: [1]\n"
      b"    labels: {stable: 1}\n  b:\n    versions: [1]\n")]
)  # fmt: skip
UNLABELLED = parse_documents(
    [("d.yaml", b"apiVersion: tfs-reconciler/v1\nmodels:\n  b:\n    versions: [1]\n")]
)


def test_flag_problems() -> None:
    config = "/config/models.config"
    assert flag_problems(TfsFlags(config, True, 0), LABELLED, config) == []
    assert flag_problems(TfsFlags(config, False, 0), UNLABELLED, config) == []
    (labels,) = flag_problems(TfsFlags(config, False, 0), LABELLED, config)
    assert "(a)" in labels and "would not boot" in labels
    (poll,) = flag_problems(TfsFlags(config, True, 30), UNLABELLED, config)
    assert "every 30 s" in poll and "Remove the flag" in poll


def fake_proc(tmp_path: Path, commands: dict[int, list[str]]) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    for pid, args in commands.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    (proc / "self").mkdir()
    return proc


def test_the_tfs_process_is_the_one_serving_our_models_config(tmp_path: Path) -> None:
    ours = tmp_path / "config" / "models.config"
    tfs = ["tensorflow_model_server", "--port=8500", f"--model_config_file={ours}"]
    other = ["tensorflow_model_server", "--model_config_file=/elsewhere/models.config"]
    proc = fake_proc(tmp_path, {7: tfs, 8: other, 9: ["sh"]})
    assert find_tfs_args(ours, proc) == [tfs]


def test_an_unseen_tfs_is_no_problem_but_is_said_once(tmp_path: Path) -> None:
    check = FlagCheck(tmp_path / "models.config", fake_proc(tmp_path, {}))
    assert check.problems(LABELLED) == []
    assert check.problems(LABELLED) == []
