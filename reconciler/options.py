"""The command line's options: their parsers, checks and TFS_RECONCILER_* variables.

Every option may come from the environment (or the service's env file): `env_default` gives
its default, and `Parser` checks such a value as argparse checks the command line's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import structlog

from reconciler import logs, option_types, webhook
from reconciler.daemon_options import DaemonOptions
from reconciler.docker_target import DockerError, DockerTarget
from reconciler.reload import ReloadMode
from reconciler.settings import (
    ENV_FILE_VARIABLE,
    ENV_PREFIX,
    Settings,
    read_env_file,
    settings_environment,
)

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


@dataclass(frozen=True)
class FromEnv:
    """An option's default read from TFS_RECONCILER_<NAME>. argparse checks neither the type
    nor the choices of a default, so Parser checks it like the command line's value once
    parsing shows the command line did not give the option."""

    variable: str
    text: str

    def __str__(self) -> str:  # as --help shows the default
        return self.text


def env_default(name: str, default: str | bool | None) -> str | bool | FromEnv | None:
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


def shared_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "where things are (each also from the environment, e.g. TFS_RECONCILER_MODELS_DIR)"
    )

    def option(
        name: str,
        default: str | None,
        help_text: str,
        kind: Callable[[str], str] = str,
    ) -> None:
        value = env_default(name, default)
        shown = f" (default: {value})" if value is not None else ""
        group.add_argument(f"--{name}", type=kind, default=value, help=help_text + shown)

    option("desired", "desired_state", "desired-state file or folder (every *.yaml / *.yml)")
    option("models-dir", "models", "host folder holding the model folders (TFS's /models)")
    option("config", None, "models.config to manage (default: <models-dir>/models.config)")
    option("serving-root", "/models", "where TFS sees --models-dir (the container mount)")
    option("rest-url", "http://localhost:8501", "TFS REST API", option_types.rest_url)
    option("grpc-target", "localhost:8500", "TFS gRPC API (host:port)", option_types.grpc_target)
    option(
        "state-dir",
        None,
        "history and last-known-good (default: .tfs-reconciler/ beside the config)",
    )
    option(
        "fleet",
        None,
        "fleet file: act on every TFS replica it lists or finds, in waves (README, Fleet);"
        " without it, on the one TFS above",
    )


class UsageError(Exception):
    """An option's value cannot be used."""


def settings_of(args: argparse.Namespace) -> Settings:
    return Settings(
        desired=Path(args.desired),
        models_dir=Path(args.models_dir),
        config=Path(args.config) if args.config else None,
        serving_root=args.serving_root,
        rest_url=args.rest_url,
        grpc_target=args.grpc_target,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )


class Parser(argparse.ArgumentParser):
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


def validate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", help="file or folder (default: --desired)")
    parser.add_argument("--serving-root", default=env_default("serving-root", "/models"))
    parser.add_argument(
        "--rest-url",
        type=option_types.rest_url,
        default=env_default("rest-url", "http://localhost:8501"),
        help="TFS REST API: verify requests are checked against the signatures it serves "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--desired", default=env_default("desired", "desired_state"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--fleet",
        default=env_default("fleet", None),
        help="also check this fleet file (README, Fleet)",
    )


def status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-addr",
        default=env_default("metrics-addr", "127.0.0.1:9109"),
        help="ask the daemon listening here first (default: %(default)s)",
    )


def apply_options(parser: argparse.ArgumentParser, default_reload: str = "none") -> None:
    group = parser.add_argument_group("how TFS takes the change")
    group.add_argument(
        "--reload",
        choices=[m.value for m in ReloadMode],
        default=env_default("reload", default_reload),
        help="grpc: push over ModelService; poll: wait for TFS's own file poll; restart: "
        "restart the container (drops traffic); auto: grpc if it answers, else poll; "
        "none: only write the file (default: %(default)s)",
    )
    group.add_argument(
        "--timeout",
        type=option_types.seconds,
        default=env_default("timeout", "120"),
        help="seconds the whole command may take, a rollback included: the apply waits at most "
        "two thirds of it for TFS to converge (default: %(default)s)",
    )
    group.add_argument(
        "--file-system-poll-seconds",
        type=float,
        default=env_default("file-system-poll-seconds", "1"),
        help="TFS's --file_system_poll_wait_seconds: it loads and unloads versions only at "
        "that poll, so a wait allows for it, and gives up after a few periods without one; "
        "read from the container's command line when --container or --container-label names "
        "it (default: %(default)s, TFS's own)",
    )
    group.add_argument(
        "--container", default=env_default("container", None), help="TFS container, for restart"
    )
    group.add_argument(
        "--container-label",
        default=env_default("container-label", None),
        help="find the TFS container by label K=V instead of by name",
    )
    group.add_argument(
        "--allow-restart",
        action="store_true",
        default=env_default("allow-restart", False),
        help="let --reload auto restart the container when gRPC does not answer",
    )
    group.add_argument(
        "--no-verify",
        action="store_true",
        default=env_default("no-verify", False),
        help="skip the desired state's verify requests",
    )


def daemon_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the daemon")
    group.add_argument(
        "--resync",
        type=option_types.seconds,
        default=env_default("resync", "30"),
        help="seconds between re-checks that catch drift no file event announces "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--resync-models",
        type=option_types.count,
        default=env_default("resync-models", "100"),
        help="how many models' live state each resync reads, taking turns, so that a resync "
        "costs the same with a thousand models as with a hundred (default: %(default)s)",
    )
    group.add_argument(
        "--self-heal",
        action=argparse.BooleanOptionalAction,
        default=env_default("self-heal", True),
        help="repair drift (a hand-edited models.config, a TFS serving another config); "
        "--no-self-heal only reports it (default: on)",
    )
    _git_options(group)
    group.add_argument(
        "--debounce",
        type=option_types.seconds_or_zero,
        default=env_default("debounce", "0.05"),
        help="seconds of quiet that end a burst of file events (default: %(default)s)",
    )
    group.add_argument(
        "--sidecar",
        action="store_true",
        default=env_default("sidecar", False),
        help="run in a Kubernetes pod beside TFS: /readyz is model-aware, single-file mounts "
        "are refused, TFS's flags are read from its process (shareProcessNamespace) and "
        "refused when a restart would not boot or a config poll would race the pushes",
    )
    group.add_argument(
        "--env-file",
        default=env_default("env-file", None),
        help="KEY=VALUE settings (TFS_RECONCILER_*) read at start and again on SIGHUP",
    )


def _git_options(group: argparse._ArgumentGroup) -> None:
    """Following a branch, fetching a remote, and the webhook that asks for a fetch."""
    group.add_argument(
        "--git",
        action=argparse.BooleanOptionalAction,
        default=env_default("git", False),
        help="apply the committed desired state of a branch, never uncommitted edits",
    )
    group.add_argument(
        "--git-branch", default=env_default("git-branch", None), help="default: the checked-out one"
    )
    group.add_argument(
        "--git-remote",
        default=env_default("git-remote", None),
        help="fetch this remote into the clone holding --desired and follow its branch, as "
        "Flux does (implies --git)",
    )
    group.add_argument(
        "--git-interval",
        type=option_types.seconds,
        default=env_default("git-interval", "60"),
        help="seconds between fetches of --git-remote (default: %(default)s)",
    )
    group.add_argument(
        "--metrics-addr",
        default=env_default("metrics-addr", "127.0.0.1:9109"),
        help="/healthz, /readyz, /metrics and /status (default: %(default)s; port 0 picks one)",
    )
    group.add_argument(
        "--webhook-addr",
        type=option_types.webhook_address,
        default=env_default("webhook-addr", None),
        help=f"serve POST {webhook.PATH} here for GitHub, GitLab and Gitea push hooks, which "
        "fetch --git-remote at once (default: off)",
    )
    group.add_argument(
        "--webhook-secret-file",
        default=env_default("webhook-secret-file", None),
        help="file holding the hooks' secret (never the secret itself on the command line)",
    )


def set_settings_environment(wanted: dict[str, str]) -> None:
    """Make `wanted` the TFS_RECONCILER_* variables: a line removed from the env file stops
    applying at the next SIGHUP, rather than lingering in os.environ."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX) and k not in wanted]:
        del os.environ[key]
    os.environ.update(wanted)


def daemon_options_of(args: argparse.Namespace) -> DaemonOptions:
    if args.webhook_addr and not args.git_remote:
        raise UsageError("--webhook-addr needs --git-remote: a hook asks for a fetch of it")
    if args.webhook_addr and not args.webhook_secret_file:
        raise UsageError("--webhook-addr needs --webhook-secret-file")
    return DaemonOptions(
        settings=with_settings(args),
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


def docker_target_of(args: argparse.Namespace) -> DockerTarget | None:
    if not args.container and not args.container_label:
        return None
    return DockerTarget(args.container, args.container_label)


log = structlog.get_logger("reconciler.cli")


def with_settings(args: argparse.Namespace) -> Settings:
    poll = float(args.file_system_poll_seconds)
    target = docker_target_of(args)
    if target is not None:
        try:
            poll = target.file_system_poll(default=poll)
        except DockerError as error:  # the reloader reports it if it needs the engine
            log.warning("file_system_poll_unknown", error=str(error), using=poll)
    return replace(settings_of(args), timeout=args.timeout, file_system_poll=poll)


def rereader(
    args: argparse.Namespace, parse: Callable[[list[str]], argparse.Namespace]
) -> Callable[[], DaemonOptions]:
    """How the daemon reads its options again (on SIGHUP): `args`' command line parsed by
    `parse` afresh, over the environment and `--env-file` as they are then (`parse` must
    build its parser on each call: the options' defaults are read from the environment)."""
    argv = list(args.argv)
    # The service's own environment; the env file is laid over it afresh on each read.
    started_with = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}

    def reread() -> DaemonOptions:
        """The options again; ValueError when they cannot be used, so that the daemon keeps
        its old ones instead of exiting with argparse's usage error."""
        if args.env_file:
            # Only this file, not the service's default ones, lies under the environment.
            set_settings_environment(
                {**started_with, **read_env_file(args.env_file), ENV_FILE_VARIABLE: args.env_file}
            )
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                fresh = parse(argv)
            logs.configure(fresh.log_level)
            return daemon_options_of(fresh)
        except SystemExit:
            lines = errors.getvalue().strip().splitlines()
            raise ValueError(lines[-1] if lines else "the settings were rejected") from None
        except UsageError as error:
            raise ValueError(str(error)) from None

    return reread
