"""Command-line flags: tensorflow_model_server's (the ones in play) plus ``--sim_*`` knobs.

Flags are written as TFS writes them, ``--name=value`` (``--name value`` works too); booleans
accept ``--name``, ``--name=true|false|1|0``. Other ``--flags`` a real TFS command line may
carry are accepted and ignored with a warning.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "t"):
        return True
    if lowered in ("0", "false", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class LoadSecondsRule:
    """``--sim_load_seconds_for=MODEL[:VERSION]=SECONDS``."""

    model: str
    version: int | None
    seconds: float

    @classmethod
    def parse(cls, spec: str) -> LoadSecondsRule:
        target, sep, seconds = spec.rpartition("=")
        model, _, version = target.partition(":")
        try:
            if not sep or not model:
                raise ValueError
            return cls(model, int(version) if version else None, float(seconds))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--sim_load_seconds_for wants MODEL[:VERSION]=SECONDS, got {spec!r}"
            ) from None


@dataclass(frozen=True)
class VersionRule:
    """``--sim_load_fail_for=MODEL[:VERSION]``: the loads it matches fail."""

    model: str
    version: int | None

    @classmethod
    def parse(cls, spec: str) -> VersionRule:
        model, _, version = spec.partition(":")
        try:
            if not model:
                raise ValueError
            return cls(model, int(version) if version else None)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--sim_load_fail_for wants MODEL[:VERSION], got {spec!r}"
            ) from None

    def matches(self, model: str, version: int) -> bool:
        return self.model == model and self.version in (None, version)


@dataclass(frozen=True)
class Flags:
    port: int = 8500
    rest_api_port: int = 8501
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0
    file_system_poll_wait_seconds: float = 1
    allow_version_labels_for_unavailable_models: bool = False
    model_name: str = "default"
    model_base_path: str = ""
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    num_load_threads: int = 0
    enable_signature_method_name_check: bool = False
    sim_load_seconds: float = 0.0
    sim_load_seconds_for: tuple[LoadSecondsRule, ...] = ()
    sim_load_fail_for: tuple[VersionRule, ...] = ()
    sim_path_map: tuple[str, ...] = ()
    sim_event_log: str = ""
    ignored: tuple[str, ...] = field(default=())

    def load_seconds(self, model: str, version: int) -> float:
        """The load time of one version: the most specific ``--sim_load_seconds_for`` wins."""
        best: LoadSecondsRule | None = None
        for rule in self.sim_load_seconds_for:
            matches = rule.model == model and rule.version in (None, version)
            if matches and (best is None or rule.version is not None):
                best = rule
        return best.seconds if best is not None else self.sim_load_seconds

    def load_fails(self, model: str, version: int) -> bool:
        """Whether ``--sim_load_fail_for`` makes this version's load fail."""
        return any(rule.matches(model, version) for rule in self.sim_load_fail_for)


class _TfsArgumentParser(argparse.ArgumentParser):
    """A flag value that does not parse ends start-up as main.cc ends it: tensorflow's
    ``Flags::Parse`` logs "Couldn't interpret value ...", main.cc prints the usage on stdout
    and returns -1 (exit status 255), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)
        print(self.format_usage(), end="", flush=True)
        sys.exit(255)


def build_parser() -> argparse.ArgumentParser:
    p = _TfsArgumentParser(
        prog="tfs-sim",
        description="A TensorFlow Serving simulator for tests (REST + gRPC ModelService).",
        epilog="Other --flags of tensorflow_model_server are accepted and ignored with a warning.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    tfs = p.add_argument_group("tensorflow_model_server flags")
    tfs.add_argument("--port", type=int, metavar="PORT", default=8500, help="gRPC port")
    tfs.add_argument(
        "--rest_api_port", type=int, metavar="PORT", default=8501, help="REST port; 0 disables REST"
    )
    tfs.add_argument(
        "--model_config_file", default="", metavar="PATH", help="text-format ModelServerConfig"
    )
    tfs.add_argument(
        "--model_config_file_poll_wait_seconds",
        metavar="SECONDS",
        type=float,
        default=0,
        help="re-read --model_config_file this often; 0 reads it once at start",
    )
    tfs.add_argument(
        "--file_system_poll_wait_seconds",
        metavar="SECONDS",
        type=float,
        default=1,
        help="scan every base_path for version folders this often; 0: once at start; "
        "negative: never (TFS takes whole seconds; the simulator also takes fractions)",
    )
    tfs.add_argument(
        "--allow_version_labels_for_unavailable_models",
        metavar="true|false",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="allow a new label (or one keeping its version) on a version not yet AVAILABLE",
    )
    tfs.add_argument(
        "--model_name", default="default", metavar="NAME", help="single-model mode: model name"
    )
    tfs.add_argument(
        "--model_base_path",
        metavar="PATH",
        default="",
        help="single-model mode: base path (ignored when --model_config_file is set)",
    )
    tfs.add_argument(
        "--max_num_load_retries", type=int, metavar="N", default=5, help="retries of a failing load"
    )
    tfs.add_argument(
        "--load_retry_interval_micros",
        metavar="MICROS",
        type=int,
        default=60_000_000,
        help="wait between load retries, in microseconds",
    )
    tfs.add_argument(
        "--num_load_threads",
        type=int,
        metavar="N",
        default=0,
        help="threads loading versions after start-up; 0 loads them one at a time in the "
        "manager thread",
    )
    tfs.add_argument(
        "--enable_signature_method_name_check",
        metavar="true|false",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        help="check a signature's method_name against the API called",
    )
    sim = p.add_argument_group("simulator-only flags")
    sim.add_argument(
        "--sim_load_seconds",
        type=float,
        metavar="SECONDS",
        default=0.0,
        help="time every load takes",
    )
    sim.add_argument(
        "--sim_load_seconds_for",
        type=LoadSecondsRule.parse,
        action="append",
        default=[],
        metavar="MODEL[:VERSION]=SECONDS",
        help="load time of one model or version (repeatable); inf makes the load hang",
    )
    sim.add_argument(
        "--sim_load_fail_for",
        type=VersionRule.parse,
        action="append",
        default=[],
        metavar="MODEL[:VERSION]",
        help="loads of this model or version fail (after their load time and retries) (repeatable)",
    )
    sim.add_argument(
        "--sim_path_map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="read paths under FROM (base paths, --model_config_file) from host folder TO, "
        "e.g. /models=$PWD/models (repeatable)",
    )
    sim.add_argument(
        "--sim_event_log",
        default="",
        metavar="FILE",
        help="append every version state, label change and config reload to FILE as a JSON "
        "line with seq and t (time.time()); GET /sim/events?since=N serves them in any case",
    )
    return p


def _as_tensorflow_takes(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[list[str], list[str]]:
    """Split `argv` as tensorflow's ``Flags::Parse`` (command_line_flags.cc) reads it: only
    ``--name=value``, or ``--name`` alone for a boolean flag; ``--name value``, ``-name=value``
    and everything after a bare ``--`` are left over, and main.cc prints "unknown argument"
    and starts with the flag's default. Returns (taken, left over)."""
    booleans = {
        option
        for action in parser._actions
        if action.nargs == "?" or action.nargs == 0
        for option in action.option_strings
    }
    taken: list[str] = []
    left: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            left.extend(argv[index + 1 :])
            break
        if arg.startswith("--") and ("=" in arg or arg in booleans):
            taken.append(arg)
        else:
            left.append(arg)
    return taken, left


def parse_flags(argv: list[str]) -> Flags:
    """Parse a command line as TFS does; what it would not take ends up in ``Flags.ignored``."""
    parser = build_parser()
    taken, left = _as_tensorflow_takes(parser, argv)
    parsed, unknown = parser.parse_known_args(taken)
    unknown = [*unknown, *left]
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in vars(parsed).items()
    }
    return Flags(**values, ignored=tuple(unknown))
