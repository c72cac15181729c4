"""Where the daemon reads the desired state: the work tree, or a commit of a git branch (with
the verify requests committed beside it)."""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import replace

from reconciler.desired import DesiredState, parse_documents
from reconciler.desired_files import check_verify_requests, read_documents
from reconciler.git_source import GitError, GitSource, Snapshot
from reconciler.no_follow import private_dir
from reconciler.problems import InputError, Problem
from reconciler.reconcile import Revision, revision_of
from reconciler.settings import Settings


class DesiredReader:
    """Reads the desired state for each pass, parsing it again only when its input changed."""

    def __init__(self) -> None:
        self._parsed: tuple[object, DesiredState] | None = None

    def read(self, settings: Settings, source: GitSource | None) -> tuple[DesiredState, Revision]:
        """The desired state and its revision; InputError or GitError when unusable."""
        if source is None:
            documents = read_documents(settings.desired)
            state = self._parse(settings, (settings.serving_root, tuple(documents)), documents)
            check_verify_requests(state, settings.desired)
            return state, revision_of(settings.desired)
        commit = source.resolve()
        key = (settings.serving_root, commit)
        if self._parsed is not None and self._parsed[0] == key:
            check_verify_requests(self._parsed[1])
            return self._parsed[1], Revision(commit, False)
        snapshot = source.snapshot(commit)
        documents = [(p, b) for p, b in snapshot.files if p.endswith((".yaml", ".yml"))]
        if not documents:
            raise GitError(f"commit {snapshot.commit[:12]} has no *.yaml under {snapshot.path}")
        parsed = self._parse(settings, key, documents)
        self._parsed = None  # kept only once its verify requests are the committed ones
        state = _committed_verify_requests(settings, parsed, snapshot)
        self._parsed = (key, state)
        check_verify_requests(state)
        return state, Revision(snapshot.commit, False)

    def _parse(
        self, settings: Settings, key: object, documents: list[tuple[str, bytes]]
    ) -> DesiredState:
        """Validate `documents`, or reuse the state parsed from the very same input: parsing
        is the costliest part of a pass with many models, and the input rarely changes."""
        if self._parsed is not None and self._parsed[0] == key:
            return self._parsed[1]
        state = parse_documents(documents, settings.serving_root)
        self._parsed = (key, state)
        return state


def _committed_verify_requests(
    settings: Settings, state: DesiredState, snapshot: Snapshot
) -> DesiredState:
    """Point each verify request at the bytes committed with the desired state, not at the
    work tree (where an uncommitted edit would count, and a --git-remote mirror has none):
    written once, by content hash, under the state folder."""
    files = dict(snapshot.files)
    folder = settings.state_path / "verify-requests"
    models = []
    for model in state.models:
        if model.verify_request is None:
            models.append(model)
            continue
        body = files.get(posixpath.normpath(model.verify_request))
        if body is None:
            where = snapshot.path or "the repository"
            raise InputError(
                [
                    Problem(
                        model.locate("verify.request"),
                        f"models.{model.name}.verify.request",
                        f"{model.verify_request} is not committed under {where} in "
                        f"{snapshot.commit[:12]}",
                    )
                ]
            )
        target = folder / f"{hashlib.sha256(body).hexdigest()[:32]}.json"
        if not target.exists():
            private_dir(private_dir(settings.state_path) / folder.name)
            partial = target.with_suffix(".tmp")
            partial.write_bytes(body)
            os.replace(partial, target)
        models.append(replace(model, verify_request=str(target)))
    return replace(state, models=tuple(models))
