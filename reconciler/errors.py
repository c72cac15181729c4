"""The two families of what stops a reconcile, so what happens next is decided by the
error's class, not by where it was caught (kopf's TemporaryError/PermanentError,
controller-runtime's TerminalError). Bad input is neither: it is `problems.InputError`."""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of the errors the reconciler raises about TFS and its surroundings."""


class TransientError(ReconcilerError):
    """Something around TFS did not answer (TFS itself, the Docker engine): nothing was
    changed by it; the pass is retried with backoff."""


class StepError(ReconcilerError):
    """A step of an apply failed (a reload refused, given up on or not possible, TFS not
    serving in time, a verify request answered wrongly): the apply rolls back to the
    last-known-good config and is retried only after its backoff, or on a change."""
