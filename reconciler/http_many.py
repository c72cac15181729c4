"""Many GETs to one HTTP/1.1 server from one thread, over a few kept-alive connections.

Reading the live state of a thousand models is four thousand small GETs. Eight threads each
with http.client spent ~190 us of CPU a request, most of it in http.client and in handing
the GIL between threads; here one thread waits on all connections at once (selectors) and
reads the answers with `http_wire`, at a fraction of that."""

from __future__ import annotations

import contextlib
import errno
import os
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
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.connecting = True  # until its connect completes
        self.deadline = deadline  # of its connect, then of the request in flight
        self.buffer = bytearray()
        self.path: str | None = None  # the request in flight
        self.tries = 0  # of the request in flight: 1 when it is asked again
        self.out = b""
        self.served = 0  # answers read on it: a kept connection the server closed is retried


class ManyGets:
    """GETs of paths on `host:port`, each answered before `timeout` seconds pass since it was
    sent. The first failure (connection refused or reset, timeout, an answer that is not
    HTTP) ends the run: OSError or BadAnswer is raised and every connection is closed.

    The first connection is made as create_connection makes it (each address the host name
    resolves to, in turn); up to `connections` more go to the address that answered, without
    waiting for them: requests go to connections that are open, so one a server holds back
    (a full accept queue drops its SYN for a second or more) holds no request back."""

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
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if port == 80 else f"{name}:{port}"
        self._width = max(1, connections)
        self._timeout = timeout
        self._cancelled = cancelled
        self._clock = clock
        self._peer: tuple[socket.AddressFamily, tuple[object, ...]] | None = None
        self._selector: selectors.BaseSelector = selectors.DefaultSelector()
        self._waiting: deque[tuple[str, int]] = deque()
        self._open: set[_Connection] = set()  # every connection: opening, idle or busy
        self._idle: list[_Connection] = []
        self._progress = 0.0  # when the last answer came or request went (or the run began)

    def run(self, paths: Iterable[str], on_answer: OnAnswer) -> None:
        self._waiting.extend((path, 0) for path in paths)
        self._progress = self._clock()
        try:
            while self._waiting or any(c.path is not None for c in self._open):
                if self._cancelled is not None and self._cancelled():
                    raise Cancelled()
                while self._waiting and self._idle:
                    self._send(self._idle.pop(), *self._waiting.popleft())
                opening = sum(c.connecting for c in self._open)
                if len(self._open) < self._width and len(self._waiting) > opening:
                    self._connect()  # one more for what waits; open at once or later
                elif not (self._waiting and self._idle):
                    self._step(on_answer)
        finally:
            for connection in self._open:
                connection.sock.close()
            self._selector.close()

    def _connect(self) -> None:
        deadline = self._clock() + self._timeout
        if self._peer is None:
            sock = socket.create_connection(self._address, timeout=self._timeout)
        else:
            sock = socket.socket(self._peer[0], socket.SOCK_STREAM)
        try:  # the socket is closed on any failure before it joins the others
            if self._peer is None:
                self._peer = (sock.family, sock.getpeername())
                error = 0
            else:
                sock.setblocking(False)
                error = sock.connect_ex(self._peer[1])
                if error not in (0, errno.EINPROGRESS):
                    raise OSError(error, os.strerror(error))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        connection = _Connection(sock, deadline)
        self._open.add(connection)
        if error:
            self._selector.register(sock, selectors.EVENT_WRITE, connection)
        else:
            connection.connecting = False
            self._selector.register(sock, selectors.EVENT_READ, connection)
            self._idle.append(connection)

    def _send(self, connection: _Connection, path: str, tries: int) -> None:
        connection.path, connection.tries = path, tries
        self._progress = self._clock()  # the request has its own deadline from now on
        connection.deadline = self._progress + self._timeout
        request = f"GET {path} HTTP/1.1\r\nHost: {self._host_header}\r\n\r\n".encode("ascii")
        sent = 0
        try:
            with contextlib.suppress(BlockingIOError):
                sent = connection.sock.send(request)
        except (BrokenPipeError, ConnectionResetError):
            if not self._retry(connection):
                raise
            return
        connection.out = request[sent:]
        if connection.out:
            events = selectors.EVENT_READ | selectors.EVENT_WRITE
            self._selector.modify(connection.sock, events, connection)

    def _step(self, on_answer: OnAnswer) -> None:
        now = self._clock()
        if now - self._progress >= self._timeout:  # connections that open and close, no request
            raise TimeoutError("timed out")
        for connection in list(self._open):
            if connection.deadline > now or not (connection.connecting or connection.path):
                continue
            if connection.path is not None or len(self._open) == 1:
                raise TimeoutError("timed out")
            self._drop(connection)  # a connect the server holds back: the others go on
        first = min(
            (c.deadline for c in self._open if c.connecting or c.path is not None),
            default=self._progress + self._timeout,
        )  # an idle connection's deadline is its last request's, long past maybe: not waited on
        for key, events in self._selector.select(max(0.0, min(first - now, 0.5))):
            ready: _Connection = key.data
            if events & selectors.EVENT_WRITE:
                self._writable(ready)
            if events & selectors.EVENT_READ and ready in self._open:
                self._read(ready, on_answer)

    def _writable(self, connection: _Connection) -> None:
        if connection.connecting:
            error = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
            connection.connecting = False
            self._selector.modify(connection.sock, selectors.EVENT_READ, connection)
            self._idle.append(connection)
            return
        sent = connection.sock.send(connection.out)
        connection.out = connection.out[sent:]
        if not connection.out:
            self._selector.modify(connection.sock, selectors.EVENT_READ, connection)

    def _read(self, connection: _Connection, on_answer: OnAnswer) -> None:
        path = connection.path
        try:
            data: bytes | None = connection.sock.recv(262144)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = None
        if path is None:  # an idle connection the server closed: gone from the pool
            self._drop(connection)
            return
        if not data and not connection.buffer and self._retry(connection):
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
        self._progress = self._clock()
        connection.buffer.clear()
        connection.path = None
        connection.served += 1
        if answer.keep_alive and data:
            self._idle.append(connection)
        else:
            self._drop(connection)
        self._waiting.extend((more, 0) for more in on_answer(path, answer))

    def _retry(self, connection: _Connection) -> bool:
        """A kept connection the server closed as the request went out: the request is asked
        again, once, on a new connection (a GET can be). False when that does not apply."""
        if not connection.served or connection.tries or connection.path is None:
            return False
        path = connection.path
        self._drop(connection)
        self._connect()
        fresh = self._idle.pop() if self._idle else None
        if fresh is None:  # still connecting: the request waits for the first one open
            self._waiting.appendleft((path, 1))
        else:
            self._send(fresh, path, 1)
        return True

    def _drop(self, connection: _Connection) -> None:
        self._selector.unregister(connection.sock)
        connection.sock.close()
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)


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
