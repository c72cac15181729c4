"""The commands with --fleet FILE (or TFS_RECONCILER_FLEET): diff, apply, status, history and
rollback across the replicas of a fleet file. Thin: read the options, call the fleet's core,
print, choose the exit code (0 done, 1 halted, rolled back, partial or refused, 130
interrupted; diff and status: 2 when changes are pending)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reconciler.config_file import write_atomic
from reconciler.desired import DesiredState
from reconciler.desired_files import load_desired
from reconciler.fleet_file import DnsDiscovery, DockerDiscovery, FleetSpec, load_fleet
from reconciler.fleet_replicas import (
    Discover,
    FileFleetLog,
    LiveDriver,
    fleet_history,
    fleet_replicas,
    one_config_each,
    replica_settings,
    restore_targets,
)
from reconciler.fleet_rollout import (
    FleetOutcome,
    FleetPlan,
    FleetResult,
    FleetRollout,
    Survey,
    fleet_plan,
    survey_to,
)
from reconciler.fleet_status import fleet_status, fleet_text
from reconciler.http_endpoint import StatusUnavailableError, read_status
from reconciler.lock import acquire
from reconciler.options import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, UsageError
from reconciler.plan import plan
from reconciler.problems import InputError, Problem
from reconciler.reconcile import revision_of
from reconciler.reload import ReloadMode
from reconciler.render import plan_text
from reconciler.replica import Replica
from reconciler.settings import Settings
from reconciler.signals import GracefulInterrupt
from reconciler.tfs_config import ServingConfig, render_config

DEFAULT_STATE_DIR = ".tfs-reconciler"  # beside the fleet file, unless --state-dir says


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The --fleet variant of `command`."""
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "diff": cmd_diff,
        "apply": cmd_apply,
        "status": cmd_status,
        "history": cmd_history,
        "rollback": cmd_rollback,
        "run": cmd_run,
        "validate": cmd_validate,
    }
    if command not in handlers:
        raise UsageError(f"{command} does not take --fleet (these do: {', '.join(handlers)})")
    return handlers[command]


def base_settings(args: argparse.Namespace) -> Settings:
    """The options every replica shares. --config is the models.config all replicas may poll,
    written once the whole fleet is done (none by default); --models-dir the model folders of
    replicas that name none; --state-dir defaults to .tfs-reconciler/ beside the fleet file."""
    fleet = Path(args.fleet)
    state = Path(args.state_dir) if args.state_dir else fleet.parent / DEFAULT_STATE_DIR
    return Settings(
        desired=Path(args.desired),
        models_dir=Path(args.models_dir),
        config=Path(args.config) if args.config else None,
        serving_root=args.serving_root,
        state_dir=state,
        timeout=getattr(args, "timeout", 120.0),
        file_system_poll=getattr(args, "file_system_poll_seconds", 1.0),
    )


def discoverer(spec: FleetSpec) -> Discover | None:
    """The fleet file's `discover`, as a callable returning replicas (fleet_discovery's)."""
    found = spec.discover
    if found is None:
        return None
    try:
        module: Any = importlib.import_module("reconciler.fleet_discovery")
    except ImportError:
        raise UsageError(
            f"{spec.file}: discover needs reconciler.fleet_discovery, not in this build"
        ) from None
    if isinstance(found, DockerDiscovery):
        label = found.label

        def docker_replicas() -> Sequence[Replica]:
            import docker

            return tuple(module.discover_docker(docker.from_env(), label))

        return docker_replicas
    assert isinstance(found, DnsDiscovery)
    dns = found
    return lambda: tuple(
        module.discover_dns(dns.name, rest_port=dns.rest_port, grpc_port=dns.grpc_port)
    )


def _fleet(args: argparse.Namespace) -> tuple[FleetSpec, Settings, tuple[Replica, ...]]:
    spec = load_fleet(Path(args.fleet))
    replicas = fleet_replicas(spec, discoverer(spec))
    if not replicas:
        raise UsageError(f"{args.fleet}: no replicas listed or found")
    return spec, base_settings(args), replicas


def _each(replicas: Sequence[Replica], task: Callable[[Replica], Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(replicas)))) as pool:
        return list(pool.map(task, replicas))


def cmd_diff(args: argparse.Namespace) -> int:
    spec, base, replicas = _fleet(args)
    desired = load_desired(base.desired, base.serving_root)
    driver = LiveDriver(base, desired)
    observed = _each(replicas, driver.observe)
    plans = [plan(desired, seen) for seen in observed]
    surveys = [driver.survey(r) for r in replicas]
    rollout = fleet_plan(surveys, spec.rollout)
    if args.output == "json":
        document = {
            "waves": [list(w) for w in rollout.waves],
            "replicas": [
                {
                    "name": r.name,
                    "in_sync": p.in_sync,
                    "steps": [str(s) for s in p.steps],
                    "drift": [str(d) for d in p.drift],
                    "problems": [str(x) for x in p.problems],
                }
                for r, p in zip(replicas, plans, strict=True)
            ],
        }
        print(json.dumps(document, indent=2))
    else:
        for replica, the_plan in zip(replicas, plans, strict=True):
            config = replica_settings(base, replica).config_path
            sys.stdout.write(f"== {replica.name} ({replica.rest})\n")
            sys.stdout.write(plan_text(the_plan, str(config)))
        for number, wave in enumerate(rollout.waves, start=1):
            print(f"wave {number}: {', '.join(wave)}")
    if any(p.blocked for p in plans):
        return EXIT_ERROR
    return EXIT_OK if all(p.in_sync for p in plans) else EXIT_CHANGES


def _locked(base: Settings, replicas: Sequence[Replica], role: str) -> contextlib.ExitStack:
    """Every replica's models.config locked (a daemon or another apply on one of them waits
    its turn: AlreadyRunningError names the holder)."""
    one_config_each(base, replicas)
    stack = contextlib.ExitStack()
    try:
        for replica in replicas:
            path = replica_settings(base, replica).config_path
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(acquire(path, role))
    except BaseException:
        stack.close()
        raise
    return stack


def _run(
    args: argparse.Namespace,
    spec: FleetSpec,
    driver: LiveDriver,
    base: Settings,
    survey: Callable[[Replica], Survey],
    replicas: Sequence[Replica],
) -> tuple[FleetPlan, FleetOutcome]:
    with (
        _locked(base, replicas, "apply"),
        GracefulInterrupt("finishing the wave in flight, then stopping") as interrupt,
    ):
        try:
            rollout = fleet_plan(_each(replicas, survey), spec.rollout, driver.revision.commit)
            outcome = FleetRollout(
                driver,
                FileFleetLog(base.state_path, ReloadMode(args.reload).value),
                spec.rollout,
                interrupted=lambda: interrupt.requested,
            ).run(rollout)
        finally:
            driver.close()
    return rollout, outcome


def _report(outcome: FleetOutcome) -> int:
    for report in outcome.reports:
        mark = "ok" if report.ok else "FAILED"
        detail = "" if report.ok else f": {report.message}"
        took = f"({report.seconds:.2f} s)"
        print(f"  {report.replica:<16} {report.phase.value:<8} {mark} {took}{detail}")
    if outcome.result is FleetResult.NOOP:
        print(f"No changes: {outcome.message}.")
    elif outcome.result is FleetResult.DONE:
        print(f"Done: {outcome.message} in {outcome.seconds:.2f} s (rollout {outcome.generation}).")
    elif outcome.result is FleetResult.BLOCKED:
        print(
            f"error: refusing to roll out, nothing was changed: {outcome.message}", file=sys.stderr
        )
    else:
        print(
            f"error: rollout {outcome.generation} {outcome.result.value}: {outcome.message}",
            file=sys.stderr,
        )
    return outcome.exit_code


def _shared_config(base: Settings, rollout: FleetPlan, outcome: FleetOutcome) -> int:
    """Write --config, the models.config every replica may poll, once the fleet is done."""
    if base.config is None or outcome.result not in (FleetResult.DONE, FleetResult.NOOP):
        return EXIT_OK
    targets = {
        render_config(s.phases.cleanup if s.phases is not None else s.before or ServingConfig())
        for s in rollout.surveys
    }
    if len(targets) != 1:
        print(
            f"error: {base.config} not written: the replicas' configs differ (their model"
            " folders differ), so no one file serves them all",
            file=sys.stderr,
        )
        return EXIT_ERROR
    write_atomic(base.config, targets.pop())
    print(f"Wrote {base.config}, the fleet's shared models.config.")
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    spec, base, replicas = _fleet(args)
    desired: DesiredState = load_desired(base.desired, base.serving_root)
    driver = LiveDriver(
        base, desired, revision_of(base.desired), ReloadMode(args.reload), not args.no_verify
    )
    rollout, outcome = _run(args, spec, driver, base, driver.survey, replicas)
    code = _report(outcome)
    return code or _shared_config(base, rollout, outcome)


def cmd_rollback(args: argparse.Namespace) -> int:
    spec, base, replicas = _fleet(args)
    records = [r for r in fleet_history(base.state_path) if restore_targets(r)]
    if args.record is not None:
        records = [r for r in records if r.id == args.record]
    if not records:
        which = f"record {args.record}" if args.record is not None else "rollout"
        print(f"error: no fleet {which} to roll back (history: {base.state_path})", file=sys.stderr)
        return EXIT_ERROR
    record = records[-1]
    targets = restore_targets(record)
    print(f"Rolling every replica back to what it served before rollout {record.id}.")
    empty = DesiredState(models=())
    driver = LiveDriver(base, empty, revision_of(base.desired), ReloadMode(args.reload))
    source = f"fleet record {record.id}"

    def survey(replica: Replica) -> Survey:
        target = targets[replica.name]
        return survey_to(replica, target, driver.observe(replica, target), source)

    chosen = [r for r in replicas if r.name in targets]
    _, outcome = _run(args, spec, driver, base, survey, chosen)
    return _report(outcome)


def cmd_status(args: argparse.Namespace) -> int:
    """The status a `run --fleet` daemon of this fleet file serves, else computed here."""
    try:
        document = read_status(args.metrics_addr, timeout=2.0)
    except StatusUnavailableError:
        document = {}
    if document.get("fleet") != str(Path(args.fleet).resolve()):  # not about this fleet
        _, base, replicas = _fleet(args)
        desired = load_desired(base.desired, base.serving_root)
        document = {"source": "cli", **fleet_status(base, replicas, desired)}
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(fleet_text(document))
    state = document["state"]
    return EXIT_OK if state == "in_sync" else EXIT_ERROR if state == "unknown" else EXIT_CHANGES


def cmd_history(args: argparse.Namespace) -> int:
    base = base_settings(args)
    records = fleet_history(base.state_path)
    if args.output == "json":
        print(json.dumps([asdict(r) for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"No fleet rollouts recorded in {base.state_path}.")
    for record in records:
        commit = (record.commit or "-")[:12]
        print(f"{record.id:>4}  {record.time}  {record.outcome:<15} {commit}")
        for step in record.steps:
            print(f"        {step}")
        if record.outcome not in (FleetResult.DONE, FleetResult.NOOP):
            print(f"        {record.message}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The fleet's daemon: a rollout every --resync seconds (README, Fleet)."""
    unsupported = [
        option
        for option, given in (
            ("--git", args.git or args.git_remote),
            ("--webhook-addr", args.webhook_addr),
            ("--sidecar", args.sidecar),
            ("--env-file", args.env_file),
        )
        if given
    ]
    if unsupported:
        raise UsageError(f"run --fleet does not take {', '.join(unsupported)} yet")
    from reconciler.fleet_daemon import FleetDaemon  # only `run` needs it: the rest start faster

    return FleetDaemon(
        Path(args.fleet),
        base_settings(args),
        ReloadMode(args.reload),
        resync=args.resync,
        verifies=not args.no_verify,
        self_heal=args.self_heal,
        metrics_addr=args.metrics_addr,
        discover_for=discoverer,
    ).run()


def cmd_validate(args: argparse.Namespace) -> int:
    """The fleet file and the desired state, each checked (nothing is asked of a replica)."""
    problems: list[Problem] = []
    try:
        spec = load_fleet(Path(args.fleet))
    except InputError as error:
        problems.extend(error.problems)
        spec = None
    path = Path(args.path or args.desired)
    try:
        desired = load_desired(path, args.serving_root)
    except InputError as error:
        problems.extend(error.problems)
        desired = None
    if problems:
        raise InputError(problems)
    assert spec is not None and desired is not None
    found = f"; discover: {spec.discover}" if spec.discover is not None else ""
    listed = ", ".join(r.name for r in spec.replicas) or "none"
    print(f"{args.fleet}: valid ({len(spec.replicas)} replica(s) listed: {listed}{found})")
    count = len(desired.models)
    print(f"{path}: valid ({count} model{'s' if count != 1 else ''})")
    return EXIT_OK
