"""The command line: parse arguments, call the core, print, choose the exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from reconciler import __version__
from reconciler.config_file import read_text, save_last_known_good, write_atomic
from reconciler.desired import DesiredState, load_desired
from reconciler.observe import Observed, StatusSource, observe
from reconciler.plan import Plan, plan
from reconciler.problems import InputError
from reconciler.render import plan_json, plan_text
from reconciler.settings import Settings
from reconciler.tfs_config import render_config
from reconciler.tfs_rest import TfsRest

EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2
ENV_PREFIX = "TFS_RECONCILER_"


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _shared_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "where things are (each also from the environment, e.g. TFS_RECONCILER_MODELS_DIR)"
    )

    def option(name: str, default: str | None, help_text: str) -> None:
        value = _env(name, default)
        shown = f" (default: {value})" if value is not None else ""
        group.add_argument(f"--{name}", default=value, help=help_text + shown)

    option("desired", "desired_state", "desired-state file or folder (every *.yaml / *.yml)")
    option("models-dir", "models", "host folder holding the model folders (TFS's /models)")
    option("config", None, "models.config to manage (default: <models-dir>/models.config)")
    option("serving-root", "/models", "where TFS sees --models-dir (the container mount)")
    option("rest-url", "http://localhost:8501", "TFS REST API")
    option("grpc-target", "localhost:8500", "TFS gRPC API (host:port)")
    option(
        "state-dir",
        None,
        "history and last-known-good (default: .tfs-reconciler/ beside the config)",
    )


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfs-reconciler",
        description="Keep TensorFlow Serving's models.config and live state equal to the "
        "desired state in desired_state/*.yaml.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check desired-state files; exit 1 if invalid")
    validate.add_argument("path", nargs="?", help="file or folder (default: --desired)")
    validate.add_argument("--serving-root", default=_env("serving-root", "/models"))
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

    apply = commands.add_parser("apply", help="write models.config (and reload TFS) to match")
    _shared_options(apply)
    apply.add_argument(
        "--reload",
        choices=("none",),
        default=_env("reload", "none"),
        help="how TFS picks up the change (default: %(default)s)",
    )
    apply.set_defaults(handler=cmd_apply)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except InputError as error:
        _print_problems(error)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _print_problems(error: InputError, stream: TextIO = sys.stderr) -> None:
    for problem in error.problems:
        print(f"error: {problem}", file=stream)


def cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.path or args.desired)
    state = load_desired(path, args.serving_root)
    count = len(state.models)
    print(
        f"{path}: valid ({count} model{'s' if count != 1 else ''}: "
        f"{', '.join(m.name for m in state.models) or 'none'})"
    )
    return EXIT_OK


def _observe(settings: Settings, desired: DesiredState, live: StatusSource | None) -> Observed:
    return observe(
        {m.name: m.base_path for m in desired.models},
        {m.name: [label for label, _ in m.labels] for m in desired.models},
        models_dir=settings.models_dir,
        serving_root=settings.serving_root,
        config_path=settings.config_path,
        live_source=live,
    )


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
    observed = _observe(settings, desired, TfsRest(settings.rest_url, settings.request_timeout))
    result = plan(desired, observed)
    config_path = str(settings.config_path)
    if args.output == "json":
        print(json.dumps(plan_json(result, config_path, _live_summary(observed)), indent=2))
    else:
        note = ""
        if observed.live is not None and not observed.live.reachable:
            note = f"Live: unknown ({observed.live.error})"
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        sys.stdout.write(plan_text(result, config_path, colour=colour, live_note=note))
    return _exit_code(result)


def _exit_code(result: Plan) -> int:
    if result.blocked:
        return EXIT_ERROR
    return EXIT_OK if result.in_sync else EXIT_CHANGES


def cmd_apply(args: argparse.Namespace) -> int:
    settings = _settings(args)
    desired = load_desired(settings.desired, settings.serving_root)
    observed = _observe(settings, desired, None)
    result = plan(desired, observed)
    if result.blocked:
        print("Refusing to apply: fix these first.", file=sys.stderr)
        for problem in result.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    if not result.changes_config:
        print(f"No changes: {settings.config_path} already matches the desired state.")
        return EXIT_OK
    previous = read_text(settings.config_path)
    if previous is not None:
        save_last_known_good(settings.state_path, previous)
    write_atomic(settings.config_path, render_config(result.target))
    for step in result.steps:
        print(step)
    print(f"Wrote {settings.config_path}.")
    return EXIT_OK
