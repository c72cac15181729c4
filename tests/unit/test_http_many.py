"""Many GETs from one thread against stand-in servers on loopback: answers, kept and
replaced connections, and servers that hang, reset, close or do not speak HTTP."""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from reconciler.fan_out import Cancelled
from reconciler.http_many import ManyGets, get_many
from reconciler.http_wire import Answer, BadAnswer
from reconciler.observe import LiveModel, LiveVersion, TfsUnreachable, read_live
from reconciler.tfs_rest import TfsRest

Handle = Callable[[socketserver.StreamRequestHandler, int], object]


def _requests(handler: socketserver.StreamRequestHandler) -> Iterator[bytes]:
    """Each request line on the connection, its headers skipped."""
    while True:
        line = handler.rfile.readline()
        if not line:
            return
        while handler.rfile.readline() not in (b"\r\n", b""):
            pass
        yield line


def _answer(body: bytes, status: int = 200, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (status, len(body))
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


class _Server:
    def __init__(self, handle: Handle) -> None:
        self.connections = 0
        self.paths: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with lock:
                    outer.connections += 1
                    number = outer.connections
                handle(self, number)

        lock = threading.Lock()
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.tcp.daemon_threads = True
        self.port = self.tcp.server_address[1]
        threading.Thread(target=self.tcp.serve_forever, args=(0.01,), daemon=True).start()

    def close(self) -> None:
        self.tcp.shutdown()
        self.tcp.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handle], _Server]]:
    servers: list[_Server] = []

    def start(handle: Handle) -> _Server:
        servers.append(_Server(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _echo(handler: socketserver.StreamRequestHandler, _number: int) -> None:
    for line in _requests(handler):
        path = line.split()[1]
        handler.wfile.write(_answer(json.dumps({"path": path.decode()}).encode()))


def test_every_path_is_answered_over_a_few_kept_connections(
    serve: Callable[[Handle], _Server],
) -> None:
    server = serve(_echo)
    seen: dict[str, str] = {}

    def on_answer(path: str, answer: Answer) -> list[str]:
        seen[path] = json.loads(answer.body)["path"]
        return [path + "/more"] if not path.endswith("/more") else []

    paths = [f"/p{i}" for i in range(200)]
    get_many("127.0.0.1", server.port, paths, on_answer, connections=4, timeout=10)
    assert seen == {p: p for p in [*paths, *(p + "/more" for p in paths)]}
    assert server.connections <= 4


def test_a_kept_connection_the_server_closed_is_replaced_once(
    serve: Callable[[Handle], _Server],
) -> None:
    def one_answer_each(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        for _line in _requests(handler):
            handler.wfile.write(_answer(b"{}"))  # kept alive, as far as the client knows
            return

    server = serve(one_answer_each)
    answers: list[int] = []

    def on_answer(_path: str, answer: Answer) -> list[str]:
        answers.append(answer.status)
        return []

    get_many(
        "127.0.0.1",
        server.port,
        [f"/p{i}" for i in range(10)],
        on_answer,
        connections=1,
        timeout=10,
    )
    assert answers == [200] * 10
    assert server.connections >= 10


def test_a_fresh_connection_closed_before_an_answer_is_not_asked_again(
    serve: Callable[[Handle], _Server],
) -> None:
    server = serve(lambda handler, _n: handler.rfile.readline())
    with pytest.raises(BadAnswer, match="closed before a whole header block"):
        get_many("127.0.0.1", server.port, ["/a"], lambda *_: [], timeout=10)
    assert server.connections == 1


def test_a_server_that_never_answers_times_out(serve: Callable[[Handle], _Server]) -> None:
    release = threading.Event()
    server = serve(lambda handler, _n: release.wait(30))
    try:
        with pytest.raises(TimeoutError):
            get_many("127.0.0.1", server.port, ["/a", "/b"], lambda *_: [], timeout=0.2)
    finally:
        release.set()


def test_a_server_that_drips_its_answer_times_out_all_the_same(
    serve: Callable[[Handle], _Server],
) -> None:
    """The deadline is the request's, not each recv's: a byte every 50 ms never ends it."""
    release = threading.Event()

    def drip(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        handler.rfile.readline()
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not release.wait(0.05):
            handler.wfile.write(b"X: y\r\n")

    server = serve(drip)
    try:
        with pytest.raises(TimeoutError):
            get_many("127.0.0.1", server.port, ["/a"], lambda *_: [], timeout=0.3)
    finally:
        release.set()


def test_a_reset_mid_answer_is_an_error(serve: Callable[[Handle], _Server]) -> None:
    def reset(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        handler.rfile.readline()
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
        handler.wfile.flush()
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        handler.connection.close()

    server = serve(reset)
    with pytest.raises((OSError, BadAnswer)):
        get_many("127.0.0.1", server.port, ["/a"], lambda *_: [], timeout=10)


def test_what_is_not_http_is_an_error(serve: Callable[[Handle], _Server]) -> None:
    def ssh(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        handler.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    server = serve(ssh)
    with pytest.raises(BadAnswer):
        get_many("127.0.0.1", server.port, ["/a"], lambda *_: [], timeout=10)


def test_two_answers_to_one_request_are_an_error(serve: Callable[[Handle], _Server]) -> None:
    def twice(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        handler.rfile.readline()
        handler.wfile.write(_answer(b"{}") + _answer(b"{}"))

    server = serve(twice)
    with pytest.raises(BadAnswer, match="more than one answer"):
        get_many("127.0.0.1", server.port, ["/a"], lambda *_: [], timeout=10)


def test_a_closed_port_is_an_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        get_many("127.0.0.1", port, ["/a"], lambda *_: [], timeout=10)


def test_cancelled_stops_the_reads(serve: Callable[[Handle], _Server]) -> None:
    server = serve(_echo)
    answered: list[str] = []

    def on_answer(path: str, _answer: Answer) -> list[str]:
        answered.append(path)
        return []

    with pytest.raises(Cancelled):
        get_many(
            "127.0.0.1",
            server.port,
            [f"/p{i}" for i in range(100)],
            on_answer,
            connections=2,
            timeout=10,
            cancelled=lambda: len(answered) >= 5,
        )
    assert len(answered) < 10


def _tfs(handler: socketserver.StreamRequestHandler, _number: int) -> None:
    """TFS's answers for three models: m0 serves 1 and 2 (stable -> 2), m1 has no AVAILABLE
    version, m2 is unknown."""
    status = {
        "/v1/models/m0": {
            "model_version_status": [
                {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK"}},
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}},
            ]
        },
        "/v1/models/m1": {"model_version_status": [{"version": "3", "state": "LOADING"}]},
        "/v1/models/m0/labels/stable/metadata": {"model_spec": {"name": "m0", "version": "2"}},
    }
    for line in _requests(handler):
        path = line.split()[1].decode()
        if path in status:
            handler.wfile.write(_answer(json.dumps(status[path]).encode()))
        else:
            handler.wfile.write(_answer(b'{"error": "x"}', 404))


def test_read_models_reads_what_a_call_each_reads(serve: Callable[[Handle], _Server]) -> None:
    server = serve(_tfs)
    rest = TfsRest(f"http://127.0.0.1:{server.port}")
    work: list[tuple[str, list[str]]] = [
        ("m0", ["stable", "canary"]),
        ("m1", ["stable"]),
        ("m2", []),
    ]
    many = rest.read_models(work)
    assert many == [
        LiveModel(
            "m0", True, (LiveVersion(2, "AVAILABLE"), LiveVersion(1, "AVAILABLE")), (("stable", 2),)
        ),
        LiveModel("m1", True, (LiveVersion(3, "LOADING"),)),
        LiveModel("m2", False),
    ]
    one_each = [
        LiveModel(
            name,
            (status := rest.model_status(name)).found,
            status.versions,
            tuple(
                (label, version)
                for label in sorted(labels)
                if status.available and (version := rest.label_version(name, label)) is not None
            ),
        )
        for name, labels in work
    ]
    assert many == one_each


def test_an_answer_that_is_not_tfs_json_makes_the_read_unreachable(
    serve: Callable[[Handle], _Server],
) -> None:
    def odd(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        for _line in _requests(handler):
            handler.wfile.write(_answer(b'{"model_version_status": [{}]}'))

    server = serve(odd)
    url = f"http://127.0.0.1:{server.port}"
    live = read_live(TfsRest(url), ["a", "b", "c"], {})
    assert not live.reachable
    assert live.error.startswith(f"TFS at {url} answered a status that is not TFS's")


def test_a_hung_tfs_makes_the_read_unreachable_within_the_timeout(
    serve: Callable[[Handle], _Server],
) -> None:
    release = threading.Event()
    server = serve(lambda handler, _n: release.wait(30))
    try:
        with pytest.raises(TfsUnreachable, match="did not answer: timed out"):
            TfsRest(f"http://127.0.0.1:{server.port}", timeout=0.2).read_models([("a", [])])
    finally:
        release.set()


class _Clock:
    """time.monotonic, put forward by the test."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


class _Recording(selectors.DefaultSelector):
    """A selector that remembers the timeouts it waited with; `quiet` is set whenever a wait
    ends with nothing ready."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []
        self.quiet = threading.Event()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.timeouts.append(timeout)
        ready = super().select(timeout)
        if not ready:
            self.quiet.set()
        return ready


def test_idle_connections_do_not_make_the_wait_spin(serve: Callable[[Handle], _Server]) -> None:
    """A connection idle since long ago has nothing to time out: waiting on the one answer
    still to come, the loop sleeps in select instead of polling it with a timeout of 0."""
    release = threading.Event()

    def slow(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        for line in _requests(handler):
            if b"/slow" in line:
                release.wait(0.5)
            handler.wfile.write(_answer(b"{}"))

    server = serve(slow)
    clock = _Clock()
    many = ManyGets("127.0.0.1", server.port, connections=2, timeout=10, clock=clock)
    many._selector = recording = _Recording()
    seen: list[str] = []

    def on_answer(path: str, _answer: Answer) -> list[str]:
        seen.append(path)
        clock.ahead += 6  # both answered 12 s on: the idle connection's deadline has passed
        return ["/slow"] if len(seen) == 2 else []

    many.run(["/a", "/b"], on_answer)
    assert sorted(seen) == ["/a", "/b", "/slow"]
    assert 0 not in recording.timeouts


def test_a_request_sent_late_has_its_whole_timeout(serve: Callable[[Handle], _Server]) -> None:
    """The timeout runs from when the request went out, not from the last answer: one asked
    9 s after it (on_answer took that long) may take 2 s more of a 10 s timeout."""
    clock = _Clock()
    recording = _Recording()

    def late(handler: socketserver.StreamRequestHandler, _number: int) -> None:
        for line in _requests(handler):
            if b"/late" in line:
                clock.ahead += 2  # 11 s since /a was answered, 2 s since /late was sent
                recording.quiet.clear()
                recording.quiet.wait(30)  # the client has looked at the clock since
            handler.wfile.write(_answer(b"{}"))

    server = serve(late)
    many = ManyGets("127.0.0.1", server.port, connections=1, timeout=10, clock=clock)
    many._selector = recording
    seen: list[str] = []

    def on_answer(path: str, _answer: Answer) -> list[str]:
        seen.append(path)
        if path == "/a":
            clock.ahead += 9
            return ["/late"]
        return []

    many.run(["/a"], on_answer)
    assert seen == ["/a", "/late"]


def test_read_models_reads_a_model_named_twice_for_each(
    serve: Callable[[Handle], _Server],
) -> None:
    server = serve(_tfs)
    rest = TfsRest(f"http://127.0.0.1:{server.port}")
    work = [("m0", ["stable"]), ("m2", []), ("m0", []), ("m0", ["stable", "canary"])]
    m0 = LiveModel("m0", True, (LiveVersion(2, "AVAILABLE"), LiveVersion(1, "AVAILABLE")))
    assert rest.read_models(work) == [
        replace(m0, labels=(("stable", 2),)),
        LiveModel("m2", False),
        m0,
        replace(m0, labels=(("stable", 2),)),
    ]


def test_a_connection_that_fails_as_it_is_set_up_is_closed(
    serve: Callable[[Handle], _Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer resets the connection before its address is read (ENOTCONN): the socket
    create_connection made is closed, not left to the garbage collector."""
    server = serve(_echo)
    made: list[socket.socket] = []
    real = socket.create_connection

    def connect(*args: object, **kwargs: object) -> socket.socket:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    def gone(_sock: socket.socket) -> object:
        raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(socket.socket, "getpeername", gone)
    with pytest.raises(OSError, match="not connected"):
        get_many("127.0.0.1", server.port, ["/a"], lambda *_: [], timeout=10)
    assert [sock.fileno() for sock in made] == [-1]
