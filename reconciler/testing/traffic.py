"""Steady request traffic against a TFS REST API, to count what a change costs in failures.

::

    from reconciler.testing.traffic import PredictStream

    with PredictStream(tfs.rest_url, "animals", label="stable", body=example) as stream:
        ...  # change TFS
    assert stream.failures == []

A background thread POSTs ``body`` to ``/v1/models/MODEL/labels/LABEL:predict`` (or a version,
or the model) one request at a time, ``interval`` seconds apart, on loopback. Bounded: it stops
after ``max_seconds`` or ``max_requests``, whichever comes first.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


def request(
    rest_url: str, method: str, path: str, body: bytes | None = None, timeout: float = 2.0
) -> tuple[int, Any]:
    """One HTTP request; (status, parsed JSON body or text). Raises OSError/HTTPException."""
    parts = urlsplit(rest_url)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
    )
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body, headers)
        reply = connection.getresponse()
        raw = reply.read()
        try:
            return reply.status, json.loads(raw)
        except ValueError:
            return reply.status, raw.decode("utf-8", "replace")
    finally:
        connection.close()


@dataclass
class PredictStream:
    """Predict requests in a background thread; ``answers`` and ``failures`` as they come."""

    rest_url: str
    model: str
    body: bytes
    label: str | None = None
    version: int | None = None
    interval: float = 0.005
    max_seconds: float = 30.0
    max_requests: int = 20_000
    lead_in: float = 0.1  # seconds of traffic before the block runs, and after it
    answers: list[Any] = field(default_factory=list)  # each 200 answer's predictions/outputs
    failures: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # time.monotonic() of each failure
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        route = f"/v1/models/{self.model}"
        if self.label is not None:
            route += f"/labels/{self.label}"
        elif self.version is not None:
            route += f"/versions/{self.version}"
        return route + ":predict"

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.total >= self.max_requests:
                return
            try:
                status, reply = request(self.rest_url, "POST", self.path, self.body)
            except (OSError, http.client.HTTPException) as error:
                status, reply = 0, f"{type(error).__name__}: {error}"
            if status == 200 and isinstance(reply, dict):
                self.answers.append(reply.get("predictions", reply.get("outputs")))
            else:
                self.failures.append(f"HTTP {status}: {reply}" if status else str(reply))
                self.failed_at.append(time.monotonic())
            time.sleep(self.interval)

    def __enter__(self) -> PredictStream:
        self._thread = threading.Thread(target=self._run, name="predict-stream", daemon=True)
        self._thread.start()
        time.sleep(self.lead_in)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(self.lead_in)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def total(self) -> int:
        return len(self.answers) + len(self.failures)

    @property
    def outage_seconds(self) -> float:
        """From the first failure to the last one (0 without failures)."""
        return self.failed_at[-1] - self.failed_at[0] if self.failed_at else 0.0
