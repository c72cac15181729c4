"""``run --sidecar``: the traps of running beside TFS in a Kubernetes pod, refused with a clear
message.

- A single-file mount (a ``subPath`` mount, a file bind mount) of the desired state or of
  models.config. Found in ``/proc/self/mountinfo``: such a file is itself a mount point. The
  mount table says so at start, before anything changes; the other tell-tale, an inode that
  stays pinned after the ConfigMap is updated, shows only after an update has already been
  missed, and the container cannot see the volume's new file to compare with anyway.
- TFS's flags, read from the TFS process itself (the pod shares its process namespace,
  ``shareProcessNamespace: true``): the process whose ``--model_config_file`` names our
  models.config. Read, not mirrored in an option of ours, so they cannot disagree with what
  TFS really runs with; read again at every pass, so a TFS restarted with other flags counts.
  Without ``--allow_version_labels_for_unavailable_models`` a models.config with labels is
  refused: TFS reads the file at start and refuses a label on a version not loaded yet, so a
  restarted TFS container would not boot. With ``--model_config_file_poll_wait_seconds`` > 0
  TFS re-applies the file on its own every N seconds over what the sidecar pushed over gRPC:
  a poll between the sidecar's write and its push, or during a rollback, applies a config the
  sidecar has not checked yet, and a pushed config the file does not say is undone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from reconciler.desired import DesiredState

log = structlog.get_logger("reconciler.sidecar")

ALLOW_LABELS = "allow_version_labels_for_unavailable_models"
CONFIG_POLL = "model_config_file_poll_wait_seconds"
CONFIG_FILE = "model_config_file"


class SidecarError(Exception):
    """A setting the sidecar refuses; the message says why and what to do."""


# --- single-file mounts ------------------------------------------------------------------------


def mount_points(mountinfo: str) -> list[str]:
    """The mount points of a ``/proc/<pid>/mountinfo`` text (field 5, octal escapes undone)."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.append(_unescape(fields[4]))
    return points


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040, \\011, \\012, \\134."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def single_file_mounts(
    points: Iterable[str], watched: Sequence[Path], is_dir: Callable[[str], bool] = os.path.isdir
) -> list[str]:
    """The mount points that are files and are, or lie under, one of `watched` (absolute)."""
    found = []
    for point in points:
        for path in watched:
            text = os.path.normpath(str(path))
            if (point == text or point.startswith(text.rstrip("/") + "/")) and not is_dir(point):
                found.append(point)
                break
    return sorted(set(found))


def refuse_single_file_mounts(
    desired: Path,
    config: Path,
    mountinfo: str | None = None,
    is_dir: Callable[[str], bool] = os.path.isdir,
) -> None:
    """SidecarError when the desired state or models.config is reached through a mount of a
    single file."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text("utf-8", "replace")
        except OSError:
            return  # not Linux: no mount table to read
    watched = [Path(os.path.abspath(desired)), Path(os.path.abspath(config))]
    found = single_file_mounts(mount_points(mountinfo), watched, is_dir)
    if found:
        raise SidecarError(
            f"{', '.join(found)}: a single-file mount (a subPath or a file bind mount). It "
            "stays pinned to the file it was mounted with: the kubelet updates a ConfigMap by "
            "swapping the ..data link of the volume's folder, which such a mount never sees, "
            "and models.config cannot be replaced there. Mount the ConfigMap (or the emptyDir "
            "holding models.config) as a folder and point --desired/--config into it."
        )


# --- TFS's flags -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfsFlags:
    model_config_file: str | None = None
    allow_labels_for_unavailable: bool = False
    config_poll_seconds: int = 0


def parse_tfs_flags(args: Sequence[str]) -> TfsFlags:
    """TFS's command line as its parser reads it (tensorflow/core/util/command_line_flags.cc,
    ``Flags::Parse``): only ``--name=value``, and ``--name`` alone for a boolean; a boolean
    is ``true``/``false`` (any case) or ``1``/``0``; the last occurrence wins. A value TFS
    could not parse stops it at start, so one is skipped here."""
    config: str | None = None
    allow = False
    poll = 0
    for arg in args:
        if not arg.startswith("--"):
            continue
        name, equals, value = arg[2:].partition("=")
        if name == CONFIG_FILE and equals:
            config = value
        elif name == ALLOW_LABELS:
            parsed = True if not equals else _bool(value)
            allow = allow if parsed is None else parsed
        elif name == CONFIG_POLL and equals:
            try:
                poll = int(value)
            except ValueError:
                continue
    return TfsFlags(config, allow, poll)


def _bool(value: str) -> bool | None:
    if value.lower() == "true" or value == "1":
        return True
    if value.lower() == "false" or value == "0":
        return False
    return None


def flag_problems(flags: TfsFlags, desired: DesiredState, config: str) -> list[str]:
    """What the sidecar refuses to apply with TFS running with `flags`."""
    problems = []
    labelled = [m.name for m in desired.models if m.labels]
    if labelled and not flags.allow_labels_for_unavailable:
        problems.append(
            f"TFS runs without --{ALLOW_LABELS}=true and the desired state has labels "
            f"({', '.join(labelled)}): TFS reads {config} at start and refuses a label on a "
            "version not loaded yet, so a restarted TFS container would not boot. Add the "
            "flag to the TFS container's args."
        )
    if flags.config_poll_seconds > 0:
        problems.append(
            f"TFS re-reads {config} every {flags.config_poll_seconds} s "
            f"(--{CONFIG_POLL}={flags.config_poll_seconds}) and applies it over what the "
            "sidecar pushed over gRPC: a poll between the sidecar's write and its push, or "
            "during a rollback, applies a config the sidecar has not checked yet, and a "
            "pushed config the file does not say is undone. Remove the flag: the sidecar "
            "pushes every change."
        )
    return problems


def find_tfs_args(config: Path, proc: Path = Path("/proc")) -> list[list[str]]:
    """The command lines of the processes (visible in a shared process namespace) whose
    --model_config_file is `config`: the same path, or the same file seen from their root."""
    wanted = os.path.abspath(config)
    try:
        ours = os.stat(config)
    except OSError:
        ours = None
    found = []
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit() and int(e) != os.getpid()]
    except OSError:
        return []
    for pid in entries:
        try:
            raw = (proc / pid / "cmdline").read_bytes()
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        named = parse_tfs_flags(args).model_config_file
        if named is None:
            continue
        if named == wanted or _same_file(proc / pid / "root", named, ours):
            found.append(args)
    return found


def _same_file(root: Path, named: str, ours: os.stat_result | None) -> bool:
    if ours is None or not named.startswith("/"):
        return False
    try:
        theirs = os.stat(root / named.lstrip("/"))
    except OSError:  # no access to their root: only the path counts
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


class FlagCheck:
    """Per pass: the problems of TFS's flags for `desired` (none when TFS's process cannot
    be seen: said once in the log, with what to do)."""

    def __init__(self, config: Path, proc: Path = Path("/proc")) -> None:
        self._config = config
        self._proc = proc
        self._unseen_said = False

    def problems(self, desired: DesiredState) -> list[str]:
        found = find_tfs_args(self._config, self._proc)
        if not found:
            if not self._unseen_said:
                self._unseen_said = True
                log.warning(
                    "tfs_flags_unseen",
                    config=str(self._config),
                    hint="no process with --model_config_file naming it is visible: share the"
                    " pod's process namespace (shareProcessNamespace: true) so the sidecar can"
                    " check TFS's flags",
                )
            return []
        self._unseen_said = False
        problems: list[str] = []
        for args in found:
            for problem in flag_problems(parse_tfs_flags(args), desired, str(self._config)):
                if problem not in problems:
                    problems.append(problem)
        return problems
