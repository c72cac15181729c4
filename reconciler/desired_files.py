"""Reading the desired state from disk: its YAML files under a folder (or one file, or a
ConfigMap volume) and the verify requests its models name."""

from __future__ import annotations

import json
import os
from pathlib import Path

from reconciler import kubelet_volume
from reconciler.desired import MAX_FILE_BYTES, DesiredState, parse_documents
from reconciler.problems import InputError, Location, Problem
from reconciler.regular_file import read_bounded

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a verify request: a REST predict body


def read_documents(path: Path) -> list[tuple[str, bytes]]:
    """The desired-state files at `path` (a file, or every *.yaml / *.yml under a folder)."""
    from_kubelet = kubelet_volume.read_generation(path, read_documents)  # a ConfigMap volume
    if from_kubelet is not None:
        return from_kubelet
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in (".yaml", ".yml")
            and not p.is_dir()  # a FIFO or a dangling link too: refused below, by name
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise InputError([Problem(Location(str(path)), "", "no *.yaml or *.yml files here")])
    elif path.exists():  # a FIFO or a device too: refused below, by name
        files = [path]
    else:
        raise InputError([Problem(Location(str(path)), "", "no such file or folder")])
    documents = []
    unreadable = []
    root = os.path.realpath(path) if path.is_dir() else None
    for file in files:
        if root is not None and not _lies_in(os.path.realpath(file), root):
            why = f"a link to a file outside {path}: not read (desired-state files must lie in it)"
            unreadable.append(Problem(Location(str(file)), "", why))
            continue
        try:
            documents.append((str(file), read_bounded(file, MAX_FILE_BYTES + 1)))
        except OSError as error:  # permissions, a folder named *.yaml, a vanished file
            unreadable.append(Problem(Location(str(file)), "", f"cannot read: {error.strerror}"))
    if unreadable:
        raise InputError(unreadable)
    return documents


def _lies_in(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def check_verify_requests(state: DesiredState, desired: Path | None = None) -> None:
    """The verify request files exist and hold a TFS REST predict body; read from `desired`
    (the desired-state folder, or file), they must lie in it, as its YAML files must."""
    problems = []
    root = None
    if desired is not None:
        root = os.path.realpath(desired if desired.is_dir() else desired.parent)
    for model in state.models:
        if model.verify_request is None:
            continue
        where = model.locate("verify.request")
        field = f"models.{model.name}.verify.request"
        if root is not None and not _lies_in(os.path.realpath(model.verify_request), root):
            problems.append(
                Problem(where, field, f"{model.verify_request} is outside {desired}: not read")
            )
            continue
        try:
            raw = read_bounded(Path(model.verify_request), MAX_REQUEST_BYTES + 1)
            if len(raw) > MAX_REQUEST_BYTES:
                raise ValueError(f"larger than the limit of {MAX_REQUEST_BYTES} bytes")
            body = json.loads(raw)
        except FileNotFoundError:
            problems.append(Problem(where, field, f"no such file: {model.verify_request}"))
            continue
        except (OSError, ValueError, RecursionError) as error:  # JSON nested too deeply
            why = error.strerror if isinstance(error, OSError) else error
            problems.append(Problem(where, field, f"cannot read {model.verify_request}: {why}"))
            continue
        if not isinstance(body, dict) or not ({"instances", "inputs"} & set(body)):
            problems.append(
                Problem(where, field, "must hold a predict body with 'instances' or 'inputs'")
            )
    if problems:
        raise InputError(problems)


def load_desired(path: Path, serving_root: str = "/models") -> DesiredState:
    """Read, validate and merge the desired state at `path` (the imperative edge)."""
    state = parse_documents(read_documents(path), serving_root)
    check_verify_requests(state, path)
    return state
