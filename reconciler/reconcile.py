"""One reconcile: read everything, plan, converge, record. The CLI and the daemon share it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from reconciler.config_file import read_text
from reconciler.config_store import ConfigStore, FileConfigStore
from reconciler.converge import Converger, Outcome, Target
from reconciler.desired import DesiredState
from reconciler.desired_files import load_desired
from reconciler.git_source import GitError, open_local
from reconciler.history import (
    STARTED_MESSAGE,
    Record,
    RollbackTarget,
    append_record,
    read_history,
    rollback_target,
)
from reconciler.observe import Observed, Prefetched, StatusSource, observe
from reconciler.outcome import Result
from reconciler.plan import Plan, Step, StepKind, plan, plan_config
from reconciler.problems import InputError, Problem
from reconciler.reload import Reloader
from reconciler.settings import Settings
from reconciler.status import status_document
from reconciler.tfs_config import ServingConfig, parse_config, render_config
from reconciler.tfs_rest import TfsRest
from reconciler.verify import signature_problems, verify_version
from reconciler.wait import ProgressHook

log = structlog.get_logger("reconciler")


@dataclass(frozen=True)
class Revision:
    """Which commit of the desired state asked for a change (None outside git)."""

    commit: str | None = None
    dirty: bool | None = None


def revision_of(path: Path) -> Revision:
    """The commit holding the desired state at `path`, and whether its work tree is dirty
    there (an empty Revision outside git)."""
    try:
        source = open_local(path)
        return Revision(source.head_commit(), source.is_dirty())
    except GitError:
        return Revision()


def observe_for(
    settings: Settings,
    desired: DesiredState,
    rest: StatusSource | None,
    extra: ServingConfig | None = None,
    live_models: frozenset[str] | None = None,
) -> Observed:
    """Disk, models.config and live TFS (every model, or only `live_models`)."""
    models = {m.name: m.base_path for m in desired.models}
    labels = {m.name: [label for label, _ in m.labels] for m in desired.models}
    for model in extra.models if extra is not None else ():
        models.setdefault(model.name, model.base_path)
        labels.setdefault(model.name, []).extend(label for label, _ in model.labels)
    return observe(
        models,
        labels,
        models_dir=settings.models_dir,
        serving_root=settings.serving_root,
        config_path=settings.config_path,
        live_source=rest,
        live_models=live_models,
    )


def with_signature_problems(the_plan: Plan, desired: DesiredState, rest: TfsRest) -> Plan:
    """`the_plan`, blocked by any verify request that does not fit the signature of a version
    its labels point at (an input error, found before anything is written)."""
    problems, notes = signature_problems(desired, rest)
    for note in notes:
        log.warning("verify_not_checked", note=note)
    if not problems:
        return the_plan
    return replace(the_plan, problems=tuple(sorted((*the_plan.problems, *problems))), phases=())


def execute(
    the_plan: Plan,
    observed: Observed,
    desired: DesiredState,
    *,
    settings: Settings,
    reloader: Reloader,
    rest: TfsRest,
    revision: Revision,
    verify: bool = True,
    heal: bool = True,
    on_progress: ProgressHook | None = None,
    interrupted: Callable[[], bool] | None = None,
    action: str = "apply",
    target_text: str | None = None,
    store: ConfigStore | None = None,
) -> tuple[Outcome, Record | None]:
    """Converge on `the_plan` and record the outcome in the history (no record for a no-op);
    `action` says what asked for it in the record ("apply", "rollback to ..."); `target_text`
    is written for the plan's target instead of its canonical rendering (a rollback restores
    the very bytes it recorded)."""
    if store is None:
        store = FileConfigStore(settings.config_path, settings.state_path)
    converger = Converger(
        Target(rest, store, reloader),
        timeout=settings.timeout,
        file_system_poll=settings.file_system_poll,
        verifier=(lambda m, v, f: verify_version(rest, m, v, f)) if verify else None,
        on_progress=on_progress,
        commit=revision.commit,
        interrupted=interrupted,
        target_text=target_text,
    )
    records = _ApplyRecords(settings, the_plan, reloader, revision, store.read(), action)
    # Known to `history` and `rollback` even if this process is killed mid-apply.
    converger.before_first_write = lambda: records.write_ahead(
        target_text or render_config(the_plan.target)
    )
    try:
        outcome = converger.apply(the_plan, observed.disk, desired, heal=heal)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, but keep the history true
        records.interrupted(store.read())
        raise
    if outcome.result == Result.NOOP or (records.tried and not records.started):
        return outcome, None  # nothing to record, or the history cannot take it
    for step in the_plan.steps if outcome.ok else ():
        log.info(
            "changed",
            **changed_fields(step),
            commit=revision.commit,
            seconds=round(outcome.seconds, 3),  # the apply that made it (phase by phase)
        )
    return records.finish(outcome)


@dataclass
class _ApplyRecords:
    """The history records of one apply: its start, written ahead of the first write, then
    its outcome under the same id."""

    settings: Settings
    the_plan: Plan
    reloader: Reloader
    revision: Revision
    before: str | None  # models.config before the apply
    action: str
    started: list[Record] = field(default_factory=list)
    tried: bool = False

    def write_ahead(self, config: str) -> None:
        self.tried = True
        self.started.append(
            self._append(Outcome(Result.STARTED, STARTED_MESSAGE, config=config), ahead=True)
        )

    def interrupted(self, now: str | None) -> None:
        """Stopped in the middle of a phase: recorded when models.config changed already."""
        if now != self.before:
            message = "stopped at once by a second interrupt, in the middle of a phase"
            self._append(Outcome(Result.INTERRUPTED, message, config=now))

    def finish(self, outcome: Outcome) -> tuple[Outcome, Record | None]:
        try:
            return outcome, self._append(outcome)
        except OSError as error:
            # The change is made (or rolled back) and its start is recorded: say so, not "failed".
            log.error("history_not_written", error=str(error), outcome=outcome.result)
            note = f" (its outcome could not be added to the history: {error})"
            started = self.started[0] if self.started else None
            return replace(outcome, message=outcome.message + note), started

    def _append(self, outcome: Outcome, ahead: bool = False) -> Record:
        return _record(
            self.settings,
            outcome,
            self.the_plan,
            self.reloader,
            self.revision,
            self.before,
            self.action,
            None if ahead else self.started,
        )


_LABEL_STEPS = (StepKind.ADD_LABEL, StepKind.MOVE_LABEL, StepKind.REMOVE_LABEL)


def changed_fields(step: Step) -> dict[str, str | int | None]:
    """A step as the `changed` event's fields, each key always of one type: a version is an
    int (`version`, and `old_version` where a label moved from), `old`/`new` are text (a
    policy, a base_path) and are left out of label steps, whose values are versions."""
    fields: dict[str, str | int | None] = {
        "action": step.kind.value,
        "model": step.model,
        "version": step.version,
        "label": step.label,
    }
    if step.kind is StepKind.MOVE_LABEL and step.old is not None:
        fields["old_version"] = int(step.old)
    elif step.kind not in _LABEL_STEPS:
        fields["old"], fields["new"] = step.old, step.new
    return fields


def _record(
    settings: Settings,
    outcome: Outcome,
    the_plan: Plan,
    reloader: Reloader,
    revision: Revision,
    before: str | None,
    action: str,
    started: list[Record] | None = None,
) -> Record:
    return append_record(
        settings.state_path,
        Record(
            id=0,
            time=datetime.now(UTC).isoformat(timespec="seconds"),
            outcome=outcome.result,
            message=outcome.message,
            reload=reloader.mode.value,
            commit=revision.commit,
            dirty=revision.dirty,
            steps=tuple(str(s) for s in the_plan.steps),
            config=outcome.config,
            previous=before,
            seconds=round(outcome.seconds, 3),
            action=action,
        ),
        same_id=started[0].id if started else None,
    )


def reconcile(
    desired: DesiredState,
    *,
    settings: Settings,
    reloader: Reloader,
    revision: Revision,
    verify: bool = True,
    heal: bool = True,
    on_progress: ProgressHook | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> tuple[Plan, Outcome, Record | None]:
    """Observe from scratch, plan, converge: level-triggered, so safe to repeat at any time."""
    rest = TfsRest(settings.rest_url, settings.request_timeout)
    observed = observe_for(settings, desired, rest if reloader.waits else None)
    the_plan = plan(desired, observed)
    if verify and reloader.waits:
        the_plan = with_signature_problems(the_plan, desired, rest)
    outcome, record = execute(
        the_plan,
        observed,
        desired,
        settings=settings,
        reloader=reloader,
        rest=rest,
        revision=revision,
        verify=verify,
        heal=heal,
        on_progress=on_progress,
        interrupted=interrupted,
    )
    return the_plan, outcome, record


class NoRollbackTarget(LookupError):
    """The history holds no config to roll back to (the message says why)."""


def rollback(
    settings: Settings,
    reloader: Reloader,
    record_id: int | None,
    *,
    on_goal: Callable[[RollbackTarget], None] | None = None,
    on_progress: ProgressHook | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> tuple[RollbackTarget, Plan, Outcome]:
    """Converge back on the config of history record `record_id` (None: the change before
    the last) and record it; `on_goal` hears which config before anything changes. Raises
    NoRollbackTarget when the history holds no such record. The caller holds the config's lock:
    the history is read under it, since its holder may be appending to it."""
    try:
        goal = rollback_target(read_history(settings.state_path), record_id)
    except LookupError as error:
        raise NoRollbackTarget(str(error)) from None
    if on_goal is not None:
        on_goal(goal)
    rest = TfsRest(settings.rest_url, settings.request_timeout)
    empty = DesiredState(models=())
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
        on_progress=on_progress,
        interrupted=interrupted,
        action=f"rollback to {goal.describe}",
        target_text=goal.config,
    )
    return goal, the_plan, outcome


def local_status(settings: Settings) -> dict[str, Any]:
    """The status document as this process sees it (when no daemon answers for it)."""
    unreadable: str | None = None
    try:
        records = read_history(settings.state_path)
    except OSError as error:  # the status is still worth showing
        records, unreadable = [], f"cannot read the history: {error}"
    last = records[-1] if records else None
    live = Prefetched(TfsRest(settings.rest_url, settings.request_timeout), settings.config_path)
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
    observed = observe_for(settings, desired, live)
    return status_document(
        desired,
        observed,
        plan(desired, observed),
        last=last,
        last_error=unreadable,
        source="cli",
        config=settings.real_config_path,
    )


@dataclass(frozen=True)
class Validation:
    desired: DesiredState
    problems: tuple[Problem, ...]  # verify requests that do not fit a signature TFS serves
    notes: tuple[str, ...]  # what could not be checked, and why


def validate(path: Path, serving_root: str, rest_url: str) -> Validation:
    """The desired state at `path` (InputError when it does not parse or validate), its verify
    requests checked against the signatures TFS serves."""
    desired = load_desired(path, serving_root)
    problems, notes = signature_problems(desired, TfsRest(rest_url))
    return Validation(desired, tuple(problems), tuple(notes))


@dataclass(frozen=True)
class Diff:
    plan: Plan
    observed: Observed
    relayout: bool  # models.config changes, and is not laid out now as it would be written


def diff(settings: Settings) -> Diff:
    """What an apply would change now; nothing is written."""
    rest = TfsRest(settings.rest_url, settings.request_timeout)
    live = Prefetched(rest, settings.config_path)  # TFS is asked while the desired state parses
    desired = load_desired(settings.desired, settings.serving_root)
    observed = observe_for(settings, desired, live)
    result = with_signature_problems(plan(desired, observed), desired, rest)
    text = read_text(settings.config_path)
    relayout = bool(
        result.changes_config
        and result.current is not None
        and text != render_config(result.current)
    )
    return Diff(result, observed, relayout)
