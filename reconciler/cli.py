"""The command line: parse arguments, call the core, print, choose the exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import structlog

from reconciler import __version__, logs
from reconciler.converge import Outcome
from reconciler.convergence import Progress
from reconciler.desired_files import load_desired
from reconciler.docker_target import DockerError
from reconciler.git_source import GitError
from reconciler.history import read_history, unfinished
from reconciler.http_endpoint import StatusUnavailableError, read_status
from reconciler.lock import AlreadyRunningError, acquire
from reconciler.option_types import log_level
from reconciler.options import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Parser,
    UsageError,
    apply_options,
    daemon_options,
    daemon_options_of,
    docker_target_of,
    env_default,
    rereader,
    settings_of,
    shared_options,
    status_options,
    validate_options,
    with_settings,
)
from reconciler.outcome import Result
from reconciler.plan import Plan
from reconciler.problems import InputError
from reconciler.reconcile import (
    NoRollbackTarget,
    diff,
    local_status,
    reconcile,
    revision_of,
    rollback,
    validate,
)
from reconciler.reload import Reloader, ReloadMode, choose_reloader
from reconciler.render import live_json, plan_json, plan_text
from reconciler.settings import (
    ENV_PREFIX,
    Settings,
    settings_environment,
)
from reconciler.sidecar import SidecarError
from reconciler.signals import GracefulInterrupt
from reconciler.status import status_text, sync_state
from reconciler.wait import ProgressHook
from reconciler.webhook import WebhookSecretError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tfs-reconciler",
        description="Keep TensorFlow Serving's models.config and live state equal to the "
        "desired state in desired_state/*.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        type=log_level,
        default=env_default("log-level", "info"),
        help="debug, info, warning or error (default: %(default)s); logs go to stderr, "
        "as JSON lines when stderr is not a terminal",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    _add_validate(commands)
    _add_diff(commands)
    _add_apply(commands)
    _add_history(commands)
    _add_rollback(commands)
    _add_run(commands)
    _add_status(commands)
    return parser


def _add_validate(commands: argparse._SubParsersAction[Parser]) -> None:
    validate = commands.add_parser("validate", help="check desired-state files; exit 1 if invalid")
    validate_options(validate)
    validate.set_defaults(handler=cmd_validate)


def _add_diff(commands: argparse._SubParsersAction[Parser]) -> None:
    diff = commands.add_parser(
        "diff", help="dry run: print the plan; exit 0 in sync, 2 changes pending, 1 error"
    )
    shared_options(diff)
    diff.add_argument("--output", choices=("text", "json"), default="text")
    diff.set_defaults(handler=cmd_diff)


def _add_apply(commands: argparse._SubParsersAction[Parser]) -> None:
    apply = commands.add_parser(
        "apply", help="write models.config, reload TFS and wait until it serves the desired state"
    )
    shared_options(apply)
    apply_options(apply)
    apply.set_defaults(handler=cmd_apply)


def _add_history(commands: argparse._SubParsersAction[Parser]) -> None:
    history = commands.add_parser("history", help="list the recorded applies")
    shared_options(history)
    history.add_argument("--output", choices=("text", "json"), default="text")
    history.set_defaults(handler=cmd_history)


def _add_rollback(commands: argparse._SubParsersAction[Parser]) -> None:
    rollback = commands.add_parser(
        "rollback", help="converge back to an earlier applied config (default: the one before)"
    )
    shared_options(rollback)
    apply_options(rollback)
    rollback.add_argument("record", nargs="?", type=int, help="history record id")
    rollback.set_defaults(handler=cmd_rollback)


def _add_run(commands: argparse._SubParsersAction[Parser]) -> None:
    run = commands.add_parser(
        "run", help="the daemon: watch desired state and models, reconcile on change and resync"
    )
    shared_options(run)
    apply_options(run, default_reload="auto")
    daemon_options(run)
    run.set_defaults(handler=cmd_run)


def _add_status(commands: argparse._SubParsersAction[Parser]) -> None:
    status = commands.add_parser(
        "status", help="desired versus live per model, last apply, last error"
    )
    shared_options(status)
    status_options(status)
    status.add_argument("--output", choices=("text", "json"), default="text")
    status.set_defaults(handler=cmd_status)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logs.configure(args.log_level)
    if args.command != "validate":
        _say_settings(args.command)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if getattr(args, "fleet", None):
            from reconciler import fleet_cli  # the fleet's commands, imported when asked for

            handler = fleet_cli.handler(args.command)
        return handler(args)
    except InputError as error:
        _print_problems(error)
        return EXIT_ERROR
    except (UsageError, OSError, AlreadyRunningError, DockerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            "\ninterrupted: what was written is recorded in `history`; apply again to finish,"
            " or roll back",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _say_settings(command: str) -> None:
    """Which env files gave this command its settings (the service's, unless
    $TFS_RECONCILER_ENV_FILE names another), and which could not be read."""
    found = settings_environment()
    for problem in found.unreadable:
        print(f"warning: settings not read from {problem}", file=sys.stderr)
    if not found.files:
        return
    if command == "run":  # the daemon logs JSON lines
        structlog.get_logger("reconciler").info(
            "settings", files=list(found.files), variables=list(found.from_files)
        )
        return
    names = ", ".join(
        v.removeprefix(ENV_PREFIX).lower().replace("_", "-") for v in found.from_files
    )
    print(
        f"settings: {', '.join(found.files)} ({names or 'none used'}; the command line and "
        f"{ENV_PREFIX}* variables override them)",
        file=sys.stderr,
    )


def _print_problems(error: InputError, stream: TextIO = sys.stderr) -> None:
    for problem in error.problems:
        print(f"error: {problem}", file=stream)


def cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.path or args.desired)
    checked = validate(path, args.serving_root, args.rest_url)
    for note in checked.notes:
        print(f"note: {note}", file=sys.stderr)
    if checked.problems:
        raise InputError(checked.problems)
    count = len(checked.desired.models)
    print(
        f"{path}: valid ({count} model{'s' if count != 1 else ''}: "
        f"{', '.join(m.name for m in checked.desired.models) or 'none'})"
    )
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    found = diff(settings)
    result, live = found.plan, found.observed.live
    config_path = str(settings.config_path)
    if args.output == "json":
        print(json.dumps(plan_json(result, config_path, live_json(live)), indent=2))
    else:
        note = f"Live: unknown ({live.error})" if live is not None and not live.reachable else ""
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        sys.stdout.write(
            plan_text(result, config_path, colour=colour, live_note=note, relayout=found.relayout)
        )
    return _exit_code(result)


def _exit_code(result: Plan) -> int:
    if result.blocked:
        return EXIT_ERROR
    return EXIT_OK if result.in_sync else EXIT_CHANGES


def cmd_run(args: argparse.Namespace) -> int:
    # A parser built afresh on each reread: its defaults come from the environment then.
    reread = rereader(args, lambda argv: build_parser().parse_args(argv))
    try:
        options = reread() if args.env_file else daemon_options_of(args)
    except ValueError as error:
        raise UsageError(f"{args.env_file}: {error}") from None
    from reconciler.daemon import Daemon  # only `run` needs it: other commands start faster

    try:
        return Daemon(options, reread).run()
    except (GitError, WebhookSecretError, SidecarError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        document = read_status(args.metrics_addr, timeout=2.0)
    except StatusUnavailableError:
        document = local_status(settings)
    else:
        # That daemon manages another models.config: its answer is not about ours.
        if document.get("config") not in (None, settings.real_config_path):
            document = local_status(settings)
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(status_text(document))
    state = sync_state(document)
    return EXIT_OK if state == "in_sync" else EXIT_ERROR if state == "unknown" else EXIT_CHANGES


def _reloader(args: argparse.Namespace, settings: Settings) -> Reloader:
    return choose_reloader(
        ReloadMode(args.reload),
        grpc_target=settings.grpc_target,
        docker=docker_target_of(args),
        allow_restart=args.allow_restart,
    )


def _progress_printer() -> ProgressHook | None:
    if not sys.stderr.isatty():
        return None

    def show(progress: Progress, elapsed: float) -> None:
        text = "; ".join(filter(None, (progress.summary, *progress.pending)))[:150]
        sys.stderr.write(f"\r\x1b[K  waiting {elapsed:5.1f} s: {text}")
        sys.stderr.flush()

    return show


def _interruptible() -> GracefulInterrupt:
    return GracefulInterrupt("finishing the phase in flight, then stopping")


def _report(
    outcome: Outcome,
    steps: Sequence[object],
    asked_tfs: bool,
    wanted: str = "the desired state",
) -> int:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    if outcome.result == Result.NOOP:
        if asked_tfs:
            print(f"No changes: TFS and models.config already match {wanted}.")
        else:
            print(
                f"No changes: models.config already matches {wanted} "
                "(TFS was not asked: --reload none; `diff` compares with what it serves)."
            )
        return EXIT_OK
    if outcome.ok:
        for step in steps:
            print(step)
        print(f"Done: {outcome.message} in {outcome.seconds:.2f} s.")
        return EXIT_OK
    print(f"error: {outcome.message}", file=sys.stderr)
    return EXIT_INTERRUPTED if outcome.result == Result.INTERRUPTED else EXIT_ERROR


def cmd_apply(args: argparse.Namespace) -> int:
    settings = with_settings(args)
    desired = load_desired(settings.desired, settings.serving_root)
    try:
        reloader = _reloader(args, settings)
    except DockerError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    with acquire(settings.config_path, "apply"), _interruptible() as interrupt:
        the_plan, outcome, _ = reconcile(
            desired,
            settings=settings,
            reloader=reloader,
            revision=revision_of(settings.desired),
            verify=not args.no_verify,
            on_progress=_progress_printer(),
            interrupted=lambda: interrupt.requested,
        )
    if the_plan.blocked:
        print("Refusing to apply: fix these first.", file=sys.stderr)
        for problem in the_plan.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    return _report(outcome, the_plan.steps, reloader.waits)


def cmd_history(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    # A "started" record is shown only when no outcome followed it (a killed apply).
    records = unfinished(read_history(settings.state_path))
    if args.output == "json":
        print(json.dumps([asdict(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"No applies recorded in {settings.state_path}.")
    for record in records:
        commit = (record.commit or "-")[:12] + ("+dirty" if record.dirty else "")
        print(f"{record.id:>4}  {record.time}  {record.outcome:<11} {record.reload:<7} {commit}")
        if record.action != "apply":
            print(f"        ({record.action})")
        for step in record.steps:
            print(f"        {step}")
        if not record.outcome.startswith(Result.APPLIED) and record.outcome != Result.WRITTEN:
            print(f"        {record.message}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = with_settings(args)
    reloader = _reloader(args, settings)
    with acquire(settings.config_path, "rollback"), _interruptible() as interrupt:
        try:
            goal, the_plan, outcome = rollback(
                settings,
                reloader,
                args.record,
                on_goal=lambda goal: print(f"Rolling back to {goal.describe}."),
                on_progress=_progress_printer(),
                interrupted=lambda: interrupt.requested,
            )
        except NoRollbackTarget as error:
            print(f"error: {error} (history: {settings.state_path})", file=sys.stderr)
            return EXIT_ERROR
    return _report(outcome, the_plan.steps, reloader.waits, goal.describe)
