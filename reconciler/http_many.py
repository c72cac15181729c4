"""Many GETs to one HTTP/1.1 server from one thread, over a few kept-alive connections.

Reading the live state of a thousand models is four thousand small GETs. Eight threads each
with http.client spent ~190 us of CPU a request, most of it in http.client and in handing
the GIL between threads; here one thread waits on all connections at once (selectors) and
reads the answers with `http_wire`, at a fraction of that."""

from __future__ import annotations

import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable

from reconciler.fan_out import Cancelled
from reconciler.http_wire import Answer, BadAnswer, read_answer

OnAnswer = Callable[[str, Answer], Iterable[str]]
"""Called with each path and its answer; returns further paths to get."""


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.path: str | None = None  # the request in flight
        self.deadline = 0.0
        self.out = b""
        self.tries = 0  # of the request in flight: 1 when it is asked again
        self.served = 0  # answers read on it: a kept connection the server closed is retried


class ManyGets:
    """GETs of paths on `host:port`, each answered before `timeout` seconds pass since it was
    sent. The first failure (connection refused or reset, timeout, an answer that is not
    HTTP) ends the run: OSError or BadAnswer is raised and every connection is closed."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connections: int,
        timeout: float,
        cancelled: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = (host, port)
        self._host_header = host if port == 80 else f"{host}:{port}"
        if ":" in host:
            self._host_header = f"[{host}]" if port == 80 else f"[{host}]:{port}"
        self._width = max(1, connections)
        self._timeout = timeout
        self._cancelled = cancelled
        self._clock = clock

    def run(self, paths: Iterable[str], on_answer: OnAnswer) -> None:
        waiting: deque[tuple[str, int]] = deque((path, 0) for path in paths)
        selector = selectors.DefaultSelector()
        idle: list[_Connection] = []
        busy: set[_Connection] = set()
        try:
            while waiting or busy:
                if self._cancelled is not None and self._cancelled():
                    raise Cancelled()
                while waiting and (idle or len(busy) < self._width):
                    path, tries = waiting.popleft()
                    fresh = tries or not idle  # a request asked again goes on a new connection
                    connection = self._connect(selector) if fresh else idle.pop()
                    busy.add(connection)
                    try:
                        self._send(selector, connection, path, tries)
                    except (BrokenPipeError, ConnectionResetError):
                        if not self._retry(selector, connection, busy, idle, waiting):
                            raise
                self._step(selector, busy, idle, waiting, on_answer)
        finally:
            for connection in (*idle, *busy):
                connection.sock.close()
            selector.close()

    def _connect(self, selector: selectors.BaseSelector) -> _Connection:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        connection = _Connection(sock)
        selector.register(sock, selectors.EVENT_READ, connection)
        return connection

    def _send(
        self, selector: selectors.BaseSelector, connection: _Connection, path: str, tries: int
    ) -> None:
        connection.path, connection.tries = path, tries
        connection.deadline = self._clock() + self._timeout
        request = f"GET {path} HTTP/1.1\r\nHost: {self._host_header}\r\n\r\n".encode("ascii")
        try:
            sent = connection.sock.send(request)
        except BlockingIOError:
            sent = 0
        connection.out = request[sent:]
        if connection.out:
            selector.modify(
                connection.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, connection
            )

    def _step(
        self,
        selector: selectors.BaseSelector,
        busy: set[_Connection],
        idle: list[_Connection],
        waiting: deque[tuple[str, int]],
        on_answer: OnAnswer,
    ) -> None:
        now = self._clock()
        first = min((c.deadline for c in busy), default=now)
        if first <= now:
            raise TimeoutError("timed out")
        for key, events in selector.select(min(first - now, 0.5)):
            connection: _Connection = key.data
            if events & selectors.EVENT_WRITE and connection.out:
                sent = connection.sock.send(connection.out)
                connection.out = connection.out[sent:]
                if not connection.out:
                    selector.modify(connection.sock, selectors.EVENT_READ, connection)
            if events & selectors.EVENT_READ:
                self._read(selector, connection, busy, idle, waiting, on_answer)

    def _read(
        self,
        selector: selectors.BaseSelector,
        connection: _Connection,
        busy: set[_Connection],
        idle: list[_Connection],
        waiting: deque[tuple[str, int]],
        on_answer: OnAnswer,
    ) -> None:
        path = connection.path
        try:
            data = connection.sock.recv(262144)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = None
        if path is None:  # an idle connection the server closed: gone from the pool
            self._drop(selector, connection, busy, idle)
            return
        if (
            not data
            and not connection.buffer
            and self._retry(selector, connection, busy, idle, waiting)
        ):
            return
        if data is None:
            raise ConnectionResetError("the server reset the connection")
        connection.buffer += data
        found = read_answer(connection.buffer, eof=not data)
        if found is None:
            return
        answer, used = found
        if used != len(connection.buffer):
            raise BadAnswer("the server sent more than one answer to one request")
        connection.buffer.clear()
        connection.path = None
        connection.served += 1
        busy.discard(connection)
        if answer.keep_alive and data:
            idle.append(connection)
        else:
            self._drop(selector, connection, busy, idle)
        waiting.extend((more, 0) for more in on_answer(path, answer))

    def _retry(
        self,
        selector: selectors.BaseSelector,
        connection: _Connection,
        busy: set[_Connection],
        idle: list[_Connection],
        waiting: deque[tuple[str, int]],
    ) -> bool:
        """A kept connection the server closed as the request went out: the request is asked
        again, once, on a new connection (a GET can be). False when that does not apply."""
        if not connection.served or connection.tries or connection.path is None:
            return False
        waiting.appendleft((connection.path, 1))
        self._drop(selector, connection, busy, idle)
        return True

    @staticmethod
    def _drop(
        selector: selectors.BaseSelector,
        connection: _Connection,
        busy: set[_Connection],
        idle: list[_Connection],
    ) -> None:
        selector.unregister(connection.sock)
        connection.sock.close()
        busy.discard(connection)
        if connection in idle:
            idle.remove(connection)


def get_many(
    host: str,
    port: int,
    paths: Iterable[str],
    on_answer: OnAnswer,
    *,
    connections: int = 8,
    timeout: float = 2.0,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """GET every path (and every path `on_answer` adds), `connections` at a time."""
    ManyGets(host, port, connections=connections, timeout=timeout, cancelled=cancelled).run(
        paths, on_answer
    )
