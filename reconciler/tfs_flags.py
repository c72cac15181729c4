"""TFS's command line as TFS reads it (tensorflow's command_line_flags.cc ``Flags::Parse``):
pure functions on the arguments, wherever they were read from (a container, a process)."""

from __future__ import annotations

ALLOW_LABELS_FLAG = "--allow_version_labels_for_unavailable_models"
FILE_SYSTEM_POLL_FLAG = "--file_system_poll_wait_seconds"
TFS_FILE_SYSTEM_POLL = 1.0  # main.cc's default


def flag_values(args: list[str], flag: str) -> list[str | None]:
    """The values TFS's flag parser (tensorflow's command_line_flags.cc, ``Flags::Parse``)
    gives `flag` (``--name``), in order: only ``--name=value`` counts, or ``--name`` alone
    (None: a boolean's true); ``-name``, ``--name value`` and anything after a bare ``--`` are
    unknown arguments to TFS, which it passes over (main.cc prints "unknown argument")."""
    found: list[str | None] = []
    for arg in args:
        if arg == "--":
            break
        if arg == flag:
            found.append(None)
        elif arg.startswith(flag + "="):
            found.append(arg[len(flag) + 1 :])
    return found


#: What runs TFS in a container: TFS itself, the official image's entrypoint (which passes
#: its arguments on to TFS) and the simulator.
TFS_PROGRAMS = frozenset({"tensorflow_model_server", "tf_serving_entrypoint.sh", "tfs-sim"})


def tfs_args(entrypoint: list[str] | None, cmd: list[str] | None) -> list[str]:
    """The arguments TFS gets in a container: what follows the TFS program in its entrypoint
    and command, so a wrapper's own words (``tini --``, whose ``--`` is not TFS's) are not
    taken for TFS's; the command alone when no word names a TFS program."""
    words = [str(word) for word in (entrypoint or []) + (cmd or [])]
    for index, word in enumerate(words):
        if word.rsplit("/", 1)[-1] in TFS_PROGRAMS:
            return words[index + 1 :]
    return [str(word) for word in cmd or []]


def int32(text: str) -> int | None:
    """``absl::SimpleAtoi`` into an int32: surrounding ASCII whitespace and a sign allowed,
    decimal digits only, None on anything else or on overflow."""
    body = text.strip(" \t\n\v\f\r")
    digits = body[1:] if body[:1] in ("-", "+") else body
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(body)
    return value if -(2**31) <= value < 2**31 else None


def file_system_poll_in(args: list[str], default: float = TFS_FILE_SYSTEM_POLL) -> float:
    """The --file_system_poll_wait_seconds a TFS command line sets (the last one wins, as
    with TFS's flag parser, which reads only ``--name=value``: ``--name 5`` leaves TFS at its
    default), else `default`. A value TFS could not parse stops TFS at start, so it is
    ignored here."""
    found = default
    for value in flag_values(args, FILE_SYSTEM_POLL_FLAG):
        number = None if value is None else int32(value)
        if number is not None:
            found = float(number)
    return found


def allows_labels_for_unavailable(args: list[str]) -> bool:
    """Whether TFS reads --allow_version_labels_for_unavailable_models as true: the last
    occurrence wins; ``true``/``false`` in any case, ``1``/``0``."""
    allowed = False
    for value in flag_values(args, ALLOW_LABELS_FLAG):
        if value is None or value.lower() == "true" or value == "1":
            allowed = True
        elif value.lower() == "false" or value == "0":
            allowed = False
    return allowed
