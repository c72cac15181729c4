"""A bounded flood of idle and half-sent connections on loopback, for the endpoints' tests.

``Flood`` opens ``idle`` connections that send nothing and ``slow`` ones that send the start
of a request and then one more byte every ``trickle`` seconds (slowloris), until it is closed
or ``hold`` seconds have passed: it stops by itself, whatever the test does.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Flood:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        idle: int = 150,
        slow: int = 150,
        trickle: float = 0.5,
        hold: float = 120.0,
        head: bytes = b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: ",
    ) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"a flood stays on loopback, not {host}")
        self._address = (host, port)
        self._counts = (idle, slow)
        self._trickle = trickle
        self._hold = hold
        self._head = head
        self.idle: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle_loop, name="flood", daemon=True)

    def __enter__(self) -> Flood:
        idle, slow = self._counts
        try:
            for _ in range(idle):
                self.idle.append(socket.create_connection(self._address, timeout=10))
            for _ in range(slow):
                sock = socket.create_connection(self._address, timeout=10)
                sock.sendall(self._head)
                self.slow.append(sock)
        except BaseException:
            self.close()
            raise
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for sock in self.idle + self.slow:
            sock.close()

    def _trickle_loop(self) -> None:
        deadline = time.monotonic() + self._hold
        while not self._stop.wait(self._trickle) and time.monotonic() < deadline:
            for sock in self.slow:
                with contextlib.suppress(OSError):
                    sock.send(b"a")
        self._stop.set()

    def still_open(self) -> int:
        """How many of the flood's connections the server has not closed."""
        return sum(1 for sock in self.idle + self.slow if not _closed_by_peer(sock))


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError as error:
        return error.errno in (errno.ECONNRESET, errno.EPIPE, errno.EBADF)
    finally:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
