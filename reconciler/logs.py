"""Log configuration: events as JSON lines for machines, coloured lines for people.

Every log line is an event with fields (``log.info("label_moved", model=...,
label=..., old=..., new=...)``). ``configure()`` chooses the renderer: JSON
lines when the output is not a terminal (journald, docker logs, CI), the
console renderer when a person is watching. Timestamps are ISO 8601 in UTC.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import Processor

__all__ = ["LEVELS", "configure"]

LEVELS = ("debug", "info", "warning", "error", "critical")


def configure(
    level: str | int = "info",
    json: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process.

    ``level`` is a name from LEVELS (any case) or a ``logging`` number.
    ``json`` None means: JSON lines unless ``stream`` is a terminal.
    ``stream`` defaults to stderr (stdout is kept for command output).
    """
    out = sys.stderr if stream is None else stream
    if json is None:
        json = not _is_tty(out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: list[Processor]
    if json:
        renderer = [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=_is_tty(out))]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    number = logging.getLevelName(name.upper())
    assert isinstance(number, int)
    return number


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
