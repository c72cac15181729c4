"""A bounded HTTP server for the daemon's endpoints: waitress, with two limits it lacks.

waitress reads every request in one event loop and hands only complete requests to a small,
fixed pool of threads, so an idle or slow connection costs a socket, never a thread, and a
request's size is capped before the application sees it. What it does not do, and this
module adds on top of its ``maintenance`` hook:

- a deadline for the whole request: a client that sends its headers or body a byte at a time
  (slowloris) keeps waitress's idle timer fresh; here it is closed ``request_timeout`` seconds
  after its request began, however it trickles;
- room for a new connection under a flood: at ``connections`` open connections, waitress stops
  accepting, and a health probe then waits for an idle one to time out. Here the new
  connection is accepted and the connection quiet for longest, among those not being answered,
  is closed instead.
"""

from __future__ import annotations

import logging
import math
import resource
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

__all__ = ["DEFAULT_LIMITS", "BoundedHttpServer", "Limits", "StartResponse", "WsgiApp"]

log = structlog.get_logger(__name__)

StartResponse = Callable[..., Any]


class WsgiApp(Protocol):
    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]: ...


@dataclass(frozen=True)
class Limits:
    """``connections``: open connections at most (lowered to fit the process's file limit);
    ``idle_timeout``: seconds a connection may sit without a request; ``request_timeout``:
    seconds from a request's first byte to its last; ``max_body``: bytes (413 above);
    ``threads``: requests answered at once."""

    connections: int = 64
    idle_timeout: float = 10.0
    request_timeout: float = 10.0
    max_body: int = 1 << 20
    max_header: int = 64 << 10
    threads: int = 2


DEFAULT_LIMITS = Limits()
LOOP_SECONDS = 1  # waitress's poll timeout and the period of the deadline checks


class _ErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress answers a request it cannot parse or take (413, 400, 431) without calling
    the application: tell the server's ``on_error`` which error it was."""

    def execute(self) -> None:
        on_error = self.channel.server.on_error
        if on_error is not None:
            on_error(type(self.request.error).__name__, self.channel.addr)
        super().execute()


class _Channel(HTTPChannel):  # type: ignore[misc]
    error_task_class = _ErrorTask


OnError = Callable[[str, Any], None]


class _Server(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server with the request deadline and eviction described above."""

    channel_class = _Channel
    limits: Limits
    on_error: OnError | None = None
    evicted = 0
    slow_closed = 0

    def readable(self) -> bool:
        super().readable()
        return bool(self.accepting)  # never stop accepting: handle_accept makes room

    def handle_accept(self) -> None:
        super().handle_accept()
        over = len(self.active_channels) - self.limits.connections
        if over > 0:
            idle = [c for c in self.active_channels.values() if not c.requests]
            # Answers still being sent (a scrape to a slow reader) go last.
            idle.sort(key=lambda c: (c.total_outbufs_len > 0, c.last_activity))
            for channel in idle[:over]:
                channel.handle_close()
                self.evicted += 1

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        for channel in self.active_channels.values():
            request = getattr(channel, "request", None)
            if request is None or channel.requests:
                continue
            started = getattr(channel, "_request_started", None)
            if started is None or started[0] is not request:
                channel._request_started = (request, now)
            elif now - started[1] > self.limits.request_timeout:
                channel.will_close = True
                self.slow_closed += 1


class BoundedHttpServer:
    """Serves ``app`` on ``host:port`` (port 0: any) in a background thread; ``start()``,
    ``stop()``, or use as a context manager. ``name`` tags its log events."""

    def __init__(
        self,
        host: str,
        port: int,
        app: WsgiApp,
        limits: Limits,
        *,
        name: str,
        on_error: OnError | None = None,
    ) -> None:
        """``on_error(kind, client)``: a request waitress refused itself, ``kind`` being its
        error's class name (RequestEntityTooLarge, BadRequest...)."""
        self._on_error = on_error
        self._host, self._port = host, port
        self._app = app
        self._limits = limits
        self._name = name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reported = (0, 0)

    @property
    def bound(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError(f"the {self._name} server is not started")
        return str(self._server.effective_host), int(self._server.effective_port)

    @property
    def limits(self) -> Limits:
        return self._limits

    def start(self) -> BoundedHttpServer:
        if self._server is not None:
            raise RuntimeError(f"the {self._name} server is already started")
        limits = self._limits
        connections = min(limits.connections, _connections_the_file_limit_allows())
        logging.getLogger("waitress").setLevel(logging.ERROR)  # ours say it in structlog
        server = _Server(
            self._app,
            host=self._host,
            port=self._port,
            threads=limits.threads,
            connection_limit=connections + 16,  # eviction keeps below; waitress's own stop
            # waitress takes these three as whole seconds (int()): a 0.5 s loop timeout
            # became 0, a busy loop that burnt a third of a core while idle.
            channel_timeout=max(1, math.ceil(limits.idle_timeout)),
            cleanup_interval=LOOP_SECONDS,
            asyncore_loop_timeout=LOOP_SECONDS,
            max_request_body_size=limits.max_body,
            max_request_header_size=limits.max_header,
            ident="tfs-reconciler",
            expose_tracebacks=False,
        )
        server.on_error = self._on_error
        server.limits = Limits(**{**limits.__dict__, "connections": connections})
        thread = threading.Thread(target=self._serve, args=(server,), name=self._name, daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        return self

    def _serve(self, server: _Server) -> None:
        try:
            server.run()
        except Exception:  # the loop must not die silently; the daemon's /healthz goes stale
            log.exception("http_server_failed", server=self._name)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        closed = threading.Event()

        def close_all() -> None:  # in the server's own loop: waitress is not thread-safe
            for channel in list(server.active_channels.values()):
                channel.handle_close()
            try:
                server.close()
            except OSError:  # its wakeup pipe was closed under it: close the listener anyway
                wasyncore.dispatcher.close(server)
            closed.set()

        try:
            server.trigger.pull_trigger(close_all)
        except OSError as error:
            # The trigger's pipe is gone (a descriptor closed under it): the loop cannot be
            # woken, so close from here; the loop sees its map empty and returns.
            log.warning("http_server_trigger_lost", server=self._name, error=str(error))
            close_all()
        closed.wait(10.0)
        thread.join(10.0)
        server.task_dispatcher.shutdown(timeout=5)
        self._server = self._thread = None

    def shed(self) -> tuple[int, int]:
        """(connections evicted to make room, requests closed for being too slow) since the
        last call: for a log line, not one per connection."""
        server = self._server
        if server is None:
            return (0, 0)
        now = (server.evicted, server.slow_closed)
        before, self._reported = self._reported, now
        return (now[0] - before[0], now[1] - before[1])

    def __enter__(self) -> BoundedHttpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _connections_the_file_limit_allows() -> int:
    """A quarter of the descriptors the process may open, for each of the two endpoints: the
    rest are the daemon's own (git, gRPC, the model tree's watches)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 16
    return max(8, soft // 4)
