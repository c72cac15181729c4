"""Logging to stderr: one line per event, ``event key=value ...``, with a TFS-like prefix."""

from __future__ import annotations

import logging
import sys


def configure(level: int = logging.INFO) -> None:
    """Send the simulator's logs to stderr (idempotent)."""
    root = logging.getLogger("tfs_sim")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _render(value: object) -> str:
    text = str(value)
    return repr(text) if (not text or any(c.isspace() for c in text)) else text


def log_event(
    logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object
) -> None:
    """Log ``event`` with its fields as ``key=value`` pairs."""
    if logger.isEnabledFor(level):
        pairs = " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        logger.log(level, "%s %s", event, pairs)
