"""Types of the command line's options: each checks one value, from the command line or from
a TFS_RECONCILER_* variable, and raises argparse.ArgumentTypeError saying what is wrong."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from reconciler import logs
from reconciler.http_endpoint import parse_address
from reconciler.tfs_rest import TfsRest


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def seconds(text: str) -> float:
    """A time span that must pass: above 0 and finite (nan makes a deadline that never
    comes, and a negative one has passed already)."""
    value = _number(text, float)
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds above 0, not {text!r}"
        )
    return value


def seconds_or_zero(text: str) -> float:
    value = _number(text, float)
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds, 0 or more, not {text!r}"
        )
    return value


def count(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text!r}")
    return value


def log_level(text: str) -> str:
    name = text.strip().lower()
    if name not in logs.LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(logs.LEVELS)}, not {text!r}")
    return name


def rest_url(text: str) -> str:
    try:
        TfsRest(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def grpc_target(text: str) -> str:
    """host:port (a name, an IPv4 address or a [bracketed] IPv6 one), or a gRPC URI such as
    dns:///host:port or unix:/path, which gRPC checks itself."""
    if ":/" in text:
        return text
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not host:port: {text!r}")
    return text


def webhook_address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
