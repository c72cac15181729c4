"""When a failed pass is tried again (the daemon's rate limiter, as controller-runtime's
workqueue keeps one): the delay doubles with each failure in a row, up to a ceiling, and the
very attempt that failed is not repeated before its delay is over. Pure: the caller says what
time it is."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BACKOFF = 300.0


@dataclass
class Backoff:
    failures: int = 0
    retry_at: float = 0.0  # the next pass comes then at the latest (0: no failure pending)
    failed_target: object = None  # what a failed apply tried: not tried again as it is

    def failed(self, now: float, base: float, target: object = None) -> float:
        """Count a failure at `now`; the delay before the next try (`base` doubled for each
        failure in a row, at most MAX_BACKOFF). `target`: what a failed apply tried."""
        self.failures += 1
        delay: float = min(MAX_BACKOFF, base * 2.0 ** (self.failures - 1))
        self.retry_at = now + delay
        if target is not None:
            self.failed_target = target
        return delay

    def forget(self) -> None:
        """A pass succeeded: the next failure starts from the base delay again."""
        self.failures, self.retry_at, self.failed_target = 0, 0.0, None

    def defers(self, target: object, now: float) -> float:
        """Seconds `target` must still wait: > 0 only for the attempt that failed last,
        before its delay is over (anything else that changed is tried at once)."""
        if target is None or target != self.failed_target or now >= self.retry_at:
            return 0.0
        return self.retry_at - now

    def due(self, now: float) -> bool:
        """A failure's retry time has come."""
        return bool(self.retry_at) and now >= self.retry_at

    def wakes_before(self, deadline: float, now: float) -> float:
        """`deadline`, or the retry time when a retry is pending before it."""
        return min(deadline, self.retry_at) if self.retry_at > now else deadline
