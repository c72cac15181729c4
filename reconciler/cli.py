"""The command line: parse arguments, call the core, print, choose the exit code."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn, TextIO

import structlog

from reconciler import __version__, logs, webhook
from reconciler.config_file import read_text
from reconciler.converge import Outcome
from reconciler.convergence import Progress
from reconciler.daemon import Daemon, DaemonOptions
from reconciler.desired import DesiredState, load_desired
from reconciler.docker_target import DockerError, DockerTarget
from reconciler.git_source import GitError
from reconciler.history import read_history, rollback_target, unfinished
from reconciler.http_endpoint import StatusUnavailableError, parse_address, read_status
from reconciler.lock import AlreadyRunningError, acquire
from reconciler.observe import Observed
from reconciler.plan import Plan, plan, plan_config
from reconciler.problems import InputError
from reconciler.reconcile import (
    Revision,
    execute,
    observe_for,
    reconcile,
    revision_of,
    with_signature_problems,
)
from reconciler.reload import Reloader, ReloadMode, choose_reloader
from reconciler.render import plan_json, plan_text
from reconciler.settings import (
    ENV_FILE_VARIABLE,
    ENV_PREFIX,
    Settings,
    read_env_file,
    settings_environment,
)
from reconciler.sidecar import SidecarError
from reconciler.signals import GracefulInterrupt
from reconciler.status import status_document, status_text, sync_state
from reconciler.tfs_config import parse_config, render_config
from reconciler.tfs_rest import TfsRest
from reconciler.verify import signature_problems
from reconciler.wait import ProgressHook
from reconciler.webhook import WebhookSecretError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


@dataclass(frozen=True)
class FromEnv:
    """An option's default read from TFS_RECONCILER_<NAME>. argparse checks neither the type
    nor the choices of a default, so _Parser checks it like the command line's value once
    parsing shows the command line did not give the option."""

    variable: str
    text: str

    def __str__(self) -> str:  # as --help shows the default
        return self.text


def _env(name: str, default: str | bool | None) -> str | bool | FromEnv | None:
    """The option's default: its TFS_RECONCILER_* variable from the environment or from the
    service's env file (the same settings as the service, without sourcing it by hand)."""
    variable = ENV_PREFIX + name.upper().replace("-", "_")
    text = settings_environment().variables.get(variable)
    return default if text is None else FromEnv(variable, text)


_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off", "")


def _from_env(action: argparse.Action, value: FromEnv) -> Any:
    """`value` converted and checked as argparse treats the option's command-line value;
    UsageError names the variable."""
    if action.nargs == 0:  # a flag: no value on the command line, a word in the environment
        word = value.text.strip().lower()
        if word not in _TRUE_WORDS + _FALSE_WORDS:
            raise UsageError(
                f"{value.variable}={value.text!r}: expected one of"
                f" {', '.join(_TRUE_WORDS)} or {', '.join(w for w in _FALSE_WORDS if w)}"
            )
        return word in _TRUE_WORDS
    try:
        converted = action.type(value.text) if callable(action.type) else value.text
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"{value.variable}: {error}") from None
    except (TypeError, ValueError):
        raise UsageError(f"{value.variable}={value.text!r}: invalid value") from None
    if action.choices is not None and converted not in action.choices:
        raise UsageError(
            f"{value.variable}={value.text!r}: invalid choice"
            f" (choose from {', '.join(map(str, action.choices))})"
        )
    return converted


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _seconds(text: str) -> float:
    """A time span that must pass: above 0 and finite (nan makes a deadline that never
    comes, and a negative one has passed already)."""
    value = _number(text, float)
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds above 0, not {text!r}"
        )
    return value


def _seconds_or_zero(text: str) -> float:
    value = _number(text, float)
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds, 0 or more, not {text!r}"
        )
    return value


def _count(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text!r}")
    return value


def _log_level(text: str) -> str:
    name = text.strip().lower()
    if name not in logs.LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(logs.LEVELS)}, not {text!r}")
    return name


def _rest_url(text: str) -> str:
    try:
        TfsRest(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _grpc_target(text: str) -> str:
    """host:port (a name, an IPv4 address or a [bracketed] IPv6 one), or a gRPC URI such as
    dns:///host:port or unix:/path, which gRPC checks itself."""
    if ":/" in text:
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not host:port: {text!r}")
    return text


def _shared_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "where things are (each also from the environment, e.g. TFS_RECONCILER_MODELS_DIR)"
    )

    def option(
        name: str,
        default: str | None,
        help_text: str,
        kind: Callable[[str], str] = str,
    ) -> None:
        value = _env(name, default)
        shown = f" (default: {value})" if value is not None else ""
        group.add_argument(f"--{name}", type=kind, default=value, help=help_text + shown)

    option("desired", "desired_state", "desired-state file or folder (every *.yaml / *.yml)")
    option("models-dir", "models", "host folder holding the model folders (TFS's /models)")
    option("config", None, "models.config to manage (default: <models-dir>/models.config)")
    option("serving-root", "/models", "where TFS sees --models-dir (the container mount)")
    option("rest-url", "http://localhost:8501", "TFS REST API", _rest_url)
    option("grpc-target", "localhost:8500", "TFS gRPC API (host:port)", _grpc_target)
    option(
        "state-dir",
        None,
        "history and last-known-good (default: .tfs-reconciler/ beside the config)",
    )


class UsageError(Exception):
    """An option's value cannot be used."""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        desired=Path(args.desired),
        models_dir=Path(args.models_dir),
        config=Path(args.config) if args.config else None,
        serving_root=args.serving_root,
        rest_url=args.rest_url,
        grpc_target=args.grpc_target,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1: exit 2 means "changes pending" (terraform plan -detailed-exitcode)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        parsed, rest = super().parse_known_args(*args, **kwargs)
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            if isinstance(value, FromEnv):
                try:
                    setattr(parsed, action.dest, _from_env(action, value))
                except UsageError as error:
                    self.error(str(error))
        return parsed, rest


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tfs-reconciler",
        description="Keep TensorFlow Serving's models.config and live state equal to the "
        "desired state in desired_state/*.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        type=_log_level,
        default=_env("log-level", "info"),
        help="debug, info, warning or error (default: %(default)s); logs go to stderr, "
        "as JSON lines when stderr is not a terminal",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    validate = commands.add_parser("validate", help="check desired-state files; exit 1 if invalid")
    validate.add_argument("path", nargs="?", help="file or folder (default: --desired)")
    validate.add_argument("--serving-root", default=_env("serving-root", "/models"))
    validate.add_argument(
        "--rest-url",
        type=_rest_url,
        default=_env("rest-url", "http://localhost:8501"),
        help="TFS REST API: verify requests are checked against the signatures it serves "
        "(default: %(default)s)",
    )
    validate.add_argument(
        "--desired", default=_env("desired", "desired_state"), help=argparse.SUPPRESS
    )
    validate.set_defaults(handler=cmd_validate)

    diff = commands.add_parser(
        "diff", help="dry run: print the plan; exit 0 in sync, 2 changes pending, 1 error"
    )
    _shared_options(diff)
    diff.add_argument("--output", choices=("text", "json"), default="text")
    diff.set_defaults(handler=cmd_diff)

    apply = commands.add_parser(
        "apply", help="write models.config, reload TFS and wait until it serves the desired state"
    )
    _shared_options(apply)
    _apply_options(apply)
    apply.set_defaults(handler=cmd_apply)

    history = commands.add_parser("history", help="list the recorded applies")
    _shared_options(history)
    history.add_argument("--output", choices=("text", "json"), default="text")
    history.set_defaults(handler=cmd_history)

    rollback = commands.add_parser(
        "rollback", help="converge back to an earlier applied config (default: the one before)"
    )
    _shared_options(rollback)
    _apply_options(rollback)
    rollback.add_argument("record", nargs="?", type=int, help="history record id")
    rollback.set_defaults(handler=cmd_rollback)

    run = commands.add_parser(
        "run", help="the daemon: watch desired state and models, reconcile on change and resync"
    )
    _shared_options(run)
    _apply_options(run, default_reload="auto")
    _daemon_options(run)
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser(
        "status", help="desired versus live per model, last apply, last error"
    )
    _shared_options(status)
    status.add_argument(
        "--metrics-addr",
        default=_env("metrics-addr", "127.0.0.1:9109"),
        help="ask the daemon listening here first (default: %(default)s)",
    )
    status.add_argument("--output", choices=("text", "json"), default="text")
    status.set_defaults(handler=cmd_status)
    return parser


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
    state = load_desired(path, args.serving_root)
    problems, notes = signature_problems(state, TfsRest(args.rest_url))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if problems:
        raise InputError(problems)
    count = len(state.models)
    print(
        f"{path}: valid ({count} model{'s' if count != 1 else ''}: "
        f"{', '.join(m.name for m in state.models) or 'none'})"
    )
    return EXIT_OK


def _live_summary(observed: Observed) -> dict[str, Any]:
    live = observed.live
    if live is None:
        return {"asked": False}
    return {
        "asked": True,
        "reachable": live.reachable,
        "error": live.error,
        "models": {
            m.name: {
                "found": m.found,
                "versions": [
                    {"version": v.version, "state": v.state, "error": v.error_message}
                    for v in m.versions
                ],
                "labels": dict(m.labels),
            }
            for m in live.models
        },
    }


def cmd_diff(args: argparse.Namespace) -> int:
    settings = _settings(args)
    desired = load_desired(settings.desired, settings.serving_root)
    rest = TfsRest(settings.rest_url, settings.request_timeout)
    observed = observe_for(settings, desired, rest)
    result = with_signature_problems(plan(desired, observed), desired, rest)
    config_path = str(settings.config_path)
    if args.output == "json":
        print(json.dumps(plan_json(result, config_path, _live_summary(observed)), indent=2))
    else:
        note = ""
        if observed.live is not None and not observed.live.reachable:
            note = f"Live: unknown ({observed.live.error})"
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        text = read_text(settings.config_path)
        relayout = (
            result.changes_config
            and result.current is not None
            and text != render_config(result.current)
        )
        sys.stdout.write(
            plan_text(result, config_path, colour=colour, live_note=note, relayout=relayout)
        )
    return _exit_code(result)


def _exit_code(result: Plan) -> int:
    if result.blocked:
        return EXIT_ERROR
    return EXIT_OK if result.in_sync else EXIT_CHANGES


def _apply_options(parser: argparse.ArgumentParser, default_reload: str = "none") -> None:
    group = parser.add_argument_group("how TFS takes the change")
    group.add_argument(
        "--reload",
        choices=[m.value for m in ReloadMode],
        default=_env("reload", default_reload),
        help="grpc: push over ModelService; poll: wait for TFS's own file poll; restart: "
        "restart the container (drops traffic); auto: grpc if it answers, else poll; "
        "none: only write the file (default: %(default)s)",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=_env("timeout", "120"),
        help="seconds the whole command may take, a rollback included: the apply waits at most "
        "two thirds of it for TFS to converge (default: %(default)s)",
    )
    group.add_argument(
        "--file-system-poll-seconds",
        type=float,
        default=_env("file-system-poll-seconds", "1"),
        help="TFS's --file_system_poll_wait_seconds: it loads and unloads versions only at "
        "that poll, so a wait allows for it, and gives up after a few periods without one; "
        "read from the container's command line when --container or --container-label names "
        "it (default: %(default)s, TFS's own)",
    )
    group.add_argument(
        "--container", default=_env("container", None), help="TFS container, for restart"
    )
    group.add_argument(
        "--container-label",
        default=_env("container-label", None),
        help="find the TFS container by label K=V instead of by name",
    )
    group.add_argument(
        "--allow-restart",
        action="store_true",
        default=_env("allow-restart", False),
        help="let --reload auto restart the container when gRPC does not answer",
    )
    group.add_argument(
        "--no-verify",
        action="store_true",
        default=_env("no-verify", False),
        help="skip the desired state's verify requests",
    )


def _daemon_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the daemon")
    group.add_argument(
        "--resync",
        type=_seconds,
        default=_env("resync", "30"),
        help="seconds between re-checks that catch drift no file event announces "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--resync-models",
        type=_count,
        default=_env("resync-models", "100"),
        help="how many models' live state each resync reads, taking turns, so that a resync "
        "costs the same with a thousand models as with a hundred (default: %(default)s)",
    )
    group.add_argument(
        "--self-heal",
        action=argparse.BooleanOptionalAction,
        default=_env("self-heal", True),
        help="repair drift (a hand-edited models.config, a TFS serving another config); "
        "--no-self-heal only reports it (default: on)",
    )
    group.add_argument(
        "--git",
        action=argparse.BooleanOptionalAction,
        default=_env("git", False),
        help="apply the committed desired state of a branch, never uncommitted edits",
    )
    group.add_argument(
        "--git-branch", default=_env("git-branch", None), help="default: the checked-out one"
    )
    group.add_argument(
        "--git-remote",
        default=_env("git-remote", None),
        help="fetch this remote into the clone holding --desired and follow its branch, as "
        "Flux does (implies --git)",
    )
    group.add_argument(
        "--git-interval",
        type=_seconds,
        default=_env("git-interval", "60"),
        help="seconds between fetches of --git-remote (default: %(default)s)",
    )
    group.add_argument(
        "--metrics-addr",
        default=_env("metrics-addr", "127.0.0.1:9109"),
        help="/healthz, /readyz, /metrics and /status (default: %(default)s; port 0 picks one)",
    )
    group.add_argument(
        "--webhook-addr",
        type=_webhook_address,
        default=_env("webhook-addr", None),
        help=f"serve POST {webhook.PATH} here for GitHub, GitLab and Gitea push hooks, which "
        "fetch --git-remote at once (default: off)",
    )
    group.add_argument(
        "--webhook-secret-file",
        default=_env("webhook-secret-file", None),
        help="file holding the hooks' secret (never the secret itself on the command line)",
    )
    group.add_argument(
        "--debounce",
        type=_seconds_or_zero,
        default=_env("debounce", "0.05"),
        help="seconds of quiet that end a burst of file events (default: %(default)s)",
    )
    group.add_argument(
        "--sidecar",
        action="store_true",
        default=_env("sidecar", False),
        help="run in a Kubernetes pod beside TFS: /readyz is model-aware, single-file mounts "
        "are refused, TFS's flags are read from its process (shareProcessNamespace) and "
        "refused when a restart would not boot or a config poll would race the pushes",
    )
    group.add_argument(
        "--env-file",
        default=_env("env-file", None),
        help="KEY=VALUE settings (TFS_RECONCILER_*) read at start and again on SIGHUP",
    )


def _webhook_address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _set_settings_environment(wanted: dict[str, str]) -> None:
    """Make `wanted` the TFS_RECONCILER_* variables: a line removed from the env file stops
    applying at the next SIGHUP, rather than lingering in os.environ."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in wanted]:
        del os.environ[key]
    os.environ.update(wanted)


def _to_daemon_options(args: argparse.Namespace) -> DaemonOptions:
    if args.webhook_addr and not args.git_remote:
        raise UsageError("--webhook-addr needs --git-remote: a hook asks for a fetch of it")
    if args.webhook_addr and not args.webhook_secret_file:
        raise UsageError("--webhook-addr needs --webhook-secret-file")
    return DaemonOptions(
        settings=_with_settings(args),
        reload=ReloadMode(args.reload),
        resync=args.resync,
        resync_models=args.resync_models,
        self_heal=args.self_heal,
        git=args.git or bool(args.git_remote),
        git_branch=args.git_branch,
        git_remote=args.git_remote,
        git_interval=args.git_interval,
        metrics_addr=args.metrics_addr,
        verify=not args.no_verify,
        container=args.container,
        container_label=args.container_label,
        allow_restart=args.allow_restart,
        debounce=args.debounce,
        webhook_addr=args.webhook_addr,
        webhook_secret_file=args.webhook_secret_file,
        sidecar=args.sidecar,
    )


def cmd_run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    # The service's own environment; the env file is laid over it afresh on each read.
    started_with = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}

    def reread() -> DaemonOptions:
        """The options again (on SIGHUP); ValueError when they cannot be used, so that the
        daemon keeps its old ones instead of exiting with argparse's usage error."""
        if args.env_file:
            # Only this file, not the service's default ones, lies under the environment.
            _set_settings_environment(
                {**started_with, **read_env_file(args.env_file), ENV_FILE_VARIABLE: args.env_file}
            )
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                fresh = build_parser().parse_args(argv)
            logs.configure(fresh.log_level)
            return _to_daemon_options(fresh)
        except SystemExit:
            lines = errors.getvalue().strip().splitlines()
            raise ValueError(lines[-1] if lines else "the settings were rejected") from None
        except UsageError as error:
            raise ValueError(str(error)) from None

    try:
        options = reread() if args.env_file else _to_daemon_options(args)
    except ValueError as error:
        raise UsageError(f"{args.env_file}: {error}") from None
    try:
        return Daemon(options, reread).run()
    except (GitError, WebhookSecretError, SidecarError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        document = read_status(args.metrics_addr, timeout=2.0)
    except StatusUnavailableError:
        document = _local_status(settings)
    else:
        # That daemon manages another models.config: its answer is not about ours.
        if document.get("config") not in (None, settings.real_config_path):
            document = _local_status(settings)
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(status_text(document))
    state = sync_state(document)
    return EXIT_OK if state == "in_sync" else EXIT_ERROR if state == "unknown" else EXIT_CHANGES


def _local_status(settings: Settings) -> dict[str, Any]:
    unreadable: str | None = None
    try:
        records = read_history(settings.state_path)
    except OSError as error:  # the status is still worth showing
        records, unreadable = [], f"cannot read the history: {error}"
    last = records[-1] if records else None
    try:
        desired = load_desired(settings.desired, settings.serving_root)
    except InputError as error:
        return status_document(
            None,
            None,
            None,
            last=last,
            last_error="; ".join(e for e in (str(error), unreadable) if e),
            source="cli",
            config=settings.real_config_path,
        )
    observed = observe_for(settings, desired, TfsRest(settings.rest_url, settings.request_timeout))
    return status_document(
        desired,
        observed,
        plan(desired, observed),
        last=last,
        last_error=unreadable,
        source="cli",
        config=settings.real_config_path,
    )


def _docker(args: argparse.Namespace) -> DockerTarget | None:
    if not args.container and not args.container_label:
        return None
    return DockerTarget(args.container, args.container_label)


def _reloader(args: argparse.Namespace, settings: Settings) -> Reloader:
    return choose_reloader(
        ReloadMode(args.reload),
        grpc_target=settings.grpc_target,
        docker=_docker(args),
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
    if outcome.result == "noop":
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
    return EXIT_INTERRUPTED if outcome.result == "interrupted" else EXIT_ERROR


log = structlog.get_logger("reconciler.cli")


def _with_settings(args: argparse.Namespace) -> Settings:
    poll = float(args.file_system_poll_seconds)
    target = _docker(args)
    if target is not None:
        try:
            poll = target.file_system_poll(default=poll)
        except DockerError as error:  # the reloader reports it if it needs the engine
            log.warning("file_system_poll_unknown", error=str(error), using=poll)
    return replace(_settings(args), timeout=args.timeout, file_system_poll=poll)


def cmd_apply(args: argparse.Namespace) -> int:
    settings = _with_settings(args)
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
    settings = _settings(args)
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
        if not record.outcome.startswith("applied") and record.outcome != "written":
            print(f"        {record.message}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    settings = _with_settings(args)
    reloader = _reloader(args, settings)
    rest = TfsRest(settings.rest_url, settings.request_timeout)
    empty = DesiredState(models=())
    # History is read under the lock: the holder may be appending to it.
    with acquire(settings.config_path, "rollback"), _interruptible() as interrupt:
        try:
            goal = rollback_target(read_history(settings.state_path), args.record)
        except LookupError as error:
            print(f"error: {error} (history: {settings.state_path})", file=sys.stderr)
            return EXIT_ERROR
        print(f"Rolling back to {goal.describe}.")
        target = parse_config(goal.config, goal.describe)
        observed = observe_for(settings, empty, rest if reloader.waits else None, target)
        the_plan = plan_config(observed, target, goal.describe)
        outcome, _ = execute(
            the_plan,
            observed,
            empty,
            settings=settings,
            reloader=reloader,
            rest=rest,
            revision=Revision(goal.commit, goal.dirty),
            verify=False,
            on_progress=_progress_printer(),
            interrupted=lambda: interrupt.requested,
            action=f"rollback to {goal.describe}",
            target_text=goal.config,
        )
    return _report(outcome, the_plan.steps, reloader.waits, goal.describe)
