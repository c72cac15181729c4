"""The REST client against a stand-in HTTP server on loopback: TFS's answers, and answers that
are not TFS's (which must surface as TfsUnreachable, never as a traceback in `diff`)."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.observe import LiveModel, LiveVersion, TfsUnreachable, read_live
from reconciler.tfs_rest import TfsRest

Routes = dict[str, tuple[int, bytes]]


@pytest.fixture
def server() -> Iterator[tuple[str, Routes]]:
    routes: Routes = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, b'{"error": "not found"}'))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    httpd.shutdown()
    httpd.server_close()


def _status(*entries: dict[str, object]) -> tuple[int, bytes]:
    return 200, json.dumps({"model_version_status": list(entries)}).encode()


def test_status_is_read_from_tfs_json(server: tuple[str, Routes]) -> None:
    url, routes = server
    routes["/v1/models/animals"] = _status(
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {
            "version": "3",
            "state": "END",
            "status": {"error_code": "NOT_FOUND", "error_message": "x"},
        },
    )
    model = TfsRest(url).model_status("animals")
    assert model.found
    assert model.versions == (
        LiveVersion(2, "AVAILABLE"),
        LiveVersion(3, "END", "NOT_FOUND", "x"),
    )


def test_unknown_model_is_not_found(server: tuple[str, Routes]) -> None:
    url, _ = server
    assert TfsRest(url).model_status("nope").found is False


def test_label_resolves_through_metadata(server: tuple[str, Routes]) -> None:
    url, routes = server
    routes["/v1/models/animals/labels/stable/metadata"] = (
        200,
        b'{"model_spec": {"name": "animals", "signature_name": "", "version": "2"}}',
    )
    assert TfsRest(url).label_version("animals", "stable") == 2
    assert TfsRest(url).label_version("animals", "canary") is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"model_version_status": [{}]}',
        b'{"model_version_status": [{"version": "two"}]}',
        b'{"model_version_status": ["x"]}',
        b'{"model_version_status": 7}',
        b'{"model_version_status": [{"version": "1", "status": "OK"}]}',
    ],
)
def test_status_that_is_not_tfs_json_is_unreachable_not_a_crash(
    server: tuple[str, Routes], body: bytes
) -> None:
    url, routes = server
    routes["/v1/models/animals"] = (200, body)
    with pytest.raises(TfsUnreachable):
        TfsRest(url).model_status("animals")


@pytest.mark.parametrize(
    "body",
    [b'{"model_spec": "x"}', b'{"model_spec": {"version": "v2"}}', b"[" * 100_000],
)
def test_metadata_that_is_not_tfs_json_resolves_nowhere(
    server: tuple[str, Routes], body: bytes
) -> None:
    url, routes = server
    routes["/v1/models/animals/labels/stable/metadata"] = (200, body)
    assert TfsRest(url).label_version("animals", "stable") is None


def test_read_live_reports_an_odd_answer_as_unreachable(server: tuple[str, Routes]) -> None:
    url, routes = server
    routes["/v1/models/animals"] = (200, b'{"model_version_status": [{}]}')
    live = read_live(TfsRest(url), ["animals"], {})
    assert live.reachable is False
    assert live.error.startswith(f"TFS at {url} answered a status that is not TFS's")


def test_closed_port_is_unreachable() -> None:
    with pytest.raises(TfsUnreachable):
        TfsRest("http://127.0.0.1:1", timeout=1).model_status("animals")


@pytest.fixture
def keep_alive_server() -> Iterator[tuple[str, list[int], list[bool]]]:
    """An HTTP/1.1 server that counts connections; `close_next[0]` makes it close the
    connection after its next answer without saying so (as an idle timeout would)."""
    connections: list[int] = []
    close_next = [False]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(1)

        def do_GET(self) -> None:
            body = json.dumps({"model_version_status": []}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if close_next[0]:
                close_next[0] = False
                self.close_connection = True

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", connections, close_next
    httpd.shutdown()
    httpd.server_close()


def test_reads_from_one_thread_share_one_kept_alive_connection(
    keep_alive_server: tuple[str, list[int], list[bool]],
) -> None:
    url, connections, _ = keep_alive_server
    rest = TfsRest(url)
    for _ in range(20):
        assert rest.model_status("animals").found
    assert len(connections) == 1


def test_a_kept_alive_connection_the_server_closed_is_replaced_once(
    keep_alive_server: tuple[str, list[int], list[bool]],
) -> None:
    url, connections, close_next = keep_alive_server
    rest = TfsRest(url)
    close_next[0] = True
    assert rest.model_status("animals").found
    assert rest.model_status("animals").found  # over a new connection, not an error
    assert len(connections) == 2


def test_answers_in_every_http_shape_are_read_over_one_kept_connection() -> None:
    """The client reads headers its own way (the stdlib's email parser was its largest cost);
    the rest of http.client's reading stays: a 100 Continue before the answer, a chunked
    body, a folded header line, several answers over one kept-alive connection."""
    body = json.dumps({"model_spec": {"version": "4"}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
        b"HTTP/1.1 200 OK\r\nContent-Length:%d\r\nConnection: keep-alive\r\n\r\n%s"
        % (len(body), body),
    ]
    connections: list[int] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            connections.append(1)
            for answer in answers:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                self.wfile.write(answer)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as tcp:
        threading.Thread(target=tcp.serve_forever, args=(0.01,), daemon=True).start()
        rest = TfsRest(f"http://127.0.0.1:{tcp.server_address[1]}")
        try:
            assert [rest.label_version("m", "stable") for _ in answers] == [4, 4, 4]
        finally:
            tcp.shutdown()
    assert len(connections) == 1


def test_a_url_prefix_with_spaces_or_non_ascii_is_percent_quoted(
    server: tuple[str, Routes],
) -> None:
    url, routes = server
    routes["/tfs%20pr%C3%A9/v1/models/a"] = _status({"version": "1", "state": "AVAILABLE"})
    rest = TfsRest(f"{url}/tfs pré/")
    assert rest.model_status("a").versions == (LiveVersion(1, "AVAILABLE"),)
    assert rest.read_models([("a", [])])[0].versions == (LiveVersion(1, "AVAILABLE"),)


def test_a_host_name_that_is_not_ascii_is_asked_for_by_its_idna_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers["Host"])
            self.send_response(404)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_args: object) -> None:
            pass

    real = socket.getaddrinfo

    def resolve(host: object, *args: object, **kwargs: object) -> object:
        known = host in ("bücher.test", b"xn--bcher-kva.test", "xn--bcher-kva.test")
        return real("127.0.0.1" if known else host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True).start()
    try:
        port = httpd.server_address[1]
        rest = TfsRest(f"http://bücher.test:{port}")
        assert rest.read_models([("a", [])])[0].found is False
        assert rest.model_status("a").found is False
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert hosts == [f"xn--bcher-kva.test:{port}"] * 2


def test_a_host_name_idna_cannot_encode_is_not_a_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        TfsRest("http://" + "é" * 70 + ".test:8501")


def test_over_https_read_models_asks_a_call_each() -> None:
    """The one-thread reader speaks plain HTTP only; over TLS each model and label is one
    call of http.client's, a few threads at a time, with the same result."""
    rest = TfsRest("https://tfs.example:8501")
    asked: list[tuple[str, ...]] = []

    def model_status(name: str) -> LiveModel:
        asked.append((name,))
        return LiveModel(name, True, (LiveVersion(2, "AVAILABLE"),))

    def label_version(name: str, label: str) -> int | None:
        asked.append((name, label))
        return 2 if label == "stable" else None

    rest.model_status = model_status  # type: ignore[method-assign]
    rest.label_version = label_version  # type: ignore[method-assign]
    models = rest.read_models([("a", ["stable", "canary"]), ("b", [])])
    assert [(m.name, m.labels) for m in models] == [("a", (("stable", 2),)), ("b", ())]
    assert sorted(asked) == [("a",), ("a", "canary"), ("a", "stable"), ("b",)]
