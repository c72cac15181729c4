"""Run the benchmarks and write bench/results.md.

    python -m bench            # full run, under 10 minutes
    python -m bench --quick    # smaller sizes and fewer samples, under a minute
    python -m bench --only scale latency   # some parts only

Figures are printed as they come. A full run also writes them, with the machine and the
command, to bench/results.md; a --quick or --only run writes only where --output says, so it
never replaces the full record. Everything runs on loopback, in temporary folders.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    cost,
    downtime,
    fleet_baseline,
    fleet_rollout,
    hostile,
    latency,
    live,
    scale,
    webhook,
)
from bench.common import Section, machine

PARTS: dict[str, tuple[str, Callable[[Section, bool], object]]] = {
    "scale": ("Scale: parse, plan + render, disk scan", scale.run),
    "hostile": ("Hostile input: a document at the size limit", hostile.run),
    "latency": ("Commit-to-live latency", latency.run),
    "cost": ("Cost: idle daemon CPU and peak RSS", cost.run),
    "live": ("Live read: diff and status over many models", live.run),
    "downtime": ("Zero downtime: failed requests during promotions", downtime.run),
    "webhook": ("Push-to-live through the webhook", webhook.run),
    "fleet": ("Fleet rollout: `apply --fleet`, the flip pushed at once", fleet_rollout.run),
    "fleet-baseline": ("Fleet baseline: one shared models.config polled", fleet_baseline.run),
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller and fewer: under a minute")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), help="run only these parts")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"Markdown results (default: {DEFAULT_OUTPUT.name} for a full run, none otherwise)",
    )
    args = parser.parse_args(argv)
    from reconciler import logs

    logs.configure("warning")
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    load_before = os.getloadavg()
    sections = []
    for key in args.only or list(PARTS):
        title, run = PARTS[key]
        section = Section(title)
        print(f"\n== {title}", flush=True)
        part_started = time.perf_counter()
        run(section, args.quick)
        section.add(f"_({time.perf_counter() - part_started:.0f} s)_")
        sections.append(section)
    elapsed = time.perf_counter() - started
    output = args.output
    if output is None and not args.quick and not args.only:
        output = DEFAULT_OUTPUT
    if output is not None:
        write_results(output, command.strip(), sections, elapsed, load_before)
        print(f"\nWrote {output} ({elapsed:.0f} s).")
    else:
        print(f"\nDone in {elapsed:.0f} s (a partial run: nothing written; see --output).")
    missed = [v for s in sections for v in s.verdicts if v[2] is False]
    return 0 if not missed else 3


def write_results(
    path: Path,
    command: str,
    sections: list[Section],
    elapsed: float,
    load_before: tuple[float, float, float],
) -> None:
    info = machine()
    load_after = os.getloadavg()
    lines = [
        "# tfs-reconciler benchmarks",
        "",
        f"Command: `{command}` (from the project root, in its venv); took {elapsed:.0f} s; "
        f"run {datetime.now(UTC).isoformat(timespec='seconds')}.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        f"Load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        "(other work on the box inflates wall-clock figures).",
        "",
        "## Targets",
        "",
        "| target | figure | verdict |",
        "|---|---|---|",
    ]
    for section in sections:
        for target, figure, met in section.verdicts:
            word = {True: "met", False: "**missed**", None: "not run"}[met]
            lines.append(f"| {target} | {figure} | {word} |")
    lines.append("")
    for section in sections:
        lines += [section.markdown(), ""]
    notes = Path(__file__).resolve().parent / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
