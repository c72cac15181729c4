"""Printing a plan for people (like `terraform plan`) and for programs (one JSON document)."""

from __future__ import annotations

import difflib
from typing import Any

from reconciler.plan import Plan
from reconciler.state import LiveModel, LiveStatus
from reconciler.tfs_config import render_config

_COLOURS = {"+": "\x1b[32m", "-": "\x1b[31m", "~": "\x1b[33m", "!": "\x1b[35m", "@": "\x1b[36m"}
_RESET = "\x1b[0m"


def _paint(line: str, colour: bool) -> str:
    if not colour or not line:
        return line
    code = _COLOURS.get(line.lstrip()[:1])
    return f"{code}{line}{_RESET}" if code else line


def config_diff(plan: Plan, path: str) -> list[str]:
    old = render_config(plan.current).splitlines(keepends=True) if plan.current else []
    new = render_config(plan.target).splitlines(keepends=True)
    if plan.current == plan.target:
        return []
    return list(difflib.unified_diff(old, new, f"{path} (current)", f"{path} (planned)"))


def plan_text(
    plan: Plan,
    config_path: str,
    *,
    colour: bool = False,
    live_note: str = "",
    relayout: bool = False,
) -> str:
    """`relayout`: the file is not in canonical form, so writing it loses its layout."""
    lines: list[str] = []
    if plan.problems:
        lines.append("Cannot plan: fix these first.")
        lines += [f"  {p}" for p in plan.problems]
        return "\n".join(lines) + "\n"
    if plan.steps:
        lines.append("Planned changes:")
        lines += [_paint(f"  {step}", colour) for step in plan.steps]
        if len(plan.phases) > 1:
            lines.append(
                f"  (applied in {len(plan.phases)} phases, so that no label points at a"
                " version before it is AVAILABLE)"
            )
    elif plan.changes_config:
        lines.append(
            "Planned changes: models.config is rewritten in canonical form"
            " (nothing served changes)."
        )
    else:
        lines.append("No changes: models.config matches the desired state.")
    for name in plan.unmanaged:
        lines.append(
            f"  (unmanaged: {name} is in models.config but in no desired-state file;"
            " set prune: true to remove it)"
        )
    if relayout:
        lines.append(
            "  (models.config is written in canonical form: its comments and layout are not"
            " kept; the file it replaces is saved as last-known-good)"
        )
    diff = config_diff(plan, config_path)
    if diff:
        lines.append("")
        lines += [_paint(line.rstrip("\n"), colour) for line in diff]
    lines.append("")
    if live_note:
        lines.append(live_note)
    elif plan.drift:
        lines.append("Live drift (TFS differs from models.config):")
        lines += [_paint(f"  {d}", colour) for d in plan.drift]
    else:
        lines.append("Live: TFS serves what models.config says.")
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan, config_path: str, live: dict[str, Any]) -> dict[str, Any]:
    return {
        "in_sync": plan.in_sync,
        "changes_config": plan.changes_config,
        "blocked": plan.blocked,
        "problems": [
            {
                "file": p.location.file,
                "line": p.location.line,
                "column": p.location.column,
                "field": p.field,
                "message": p.message,
                "text": str(p),
            }
            for p in plan.problems
        ],
        "steps": [
            {
                "action": s.kind.value,
                "model": s.model,
                "version": s.version,
                "label": s.label,
                "old": s.old,
                "new": s.new,
                "text": str(s),
            }
            for s in plan.steps
        ],
        "phases": len(plan.phases),
        "unmanaged": list(plan.unmanaged),
        "config": {
            "path": config_path,
            "current": render_config(plan.current) if plan.current else None,
            "planned": render_config(plan.target),
            "diff": "".join(config_diff(plan, config_path)),
        },
        "live": live,
        "drift": [
            {"model": d.model, "version": d.version, "label": d.label, "message": d.message}
            for d in plan.drift
        ],
    }


def live_model_json(model: LiveModel) -> dict[str, Any]:
    """What TFS serves of one model, as `diff --output json` and `status` show it."""
    return {
        "found": model.found,
        "versions": [
            {"version": v.version, "state": v.state, "error": v.error_message}
            for v in model.versions
        ],
        "labels": dict(model.labels),
    }


def live_json(live: LiveStatus | None) -> dict[str, Any]:
    """What was read from TFS (`asked` False: it was not asked), for `diff --output json`."""
    if live is None:
        return {"asked": False}
    return {
        "asked": True,
        "reachable": live.reachable,
        "error": live.error,
        "models": {m.name: live_model_json(m) for m in live.models},
    }
