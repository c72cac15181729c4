"""The daemon's HTTP endpoint, spoken to over real HTTP on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.http_endpoint import (
    Address,
    HttpEndpoint,
    StatusUnavailableError,
    parse_address,
    read_status,
)
from reconciler.http_server import Limits
from reconciler.metrics import Metrics
from reconciler.outcome import Result
from reconciler.testing.flood import Flood

LOOPBACK = Address("127.0.0.1", 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(endpoint: HttpEndpoint, path: str) -> tuple[int, str, bytes]:
    """GET a path; answers with any status (404, 503...) are returned, not raised."""
    try:
        with urllib.request.urlopen(f"{endpoint.address.url}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics.create()


@pytest.fixture
def endpoint(metrics: Metrics) -> Iterator[HttpEndpoint]:
    document = {"commit": "abc123", "models": {"animals": {"stable": 2}}}
    with HttpEndpoint(LOOPBACK, metrics.registry, lambda: document) as started:
        yield started


def test_port_zero_binds_a_free_port_and_exposes_it(endpoint: HttpEndpoint) -> None:
    assert endpoint.address.host == "127.0.0.1"
    assert endpoint.address.port > 0


def test_healthz_answers_while_the_process_is_alive(endpoint: HttpEndpoint) -> None:
    code, content_type, body = get(endpoint, "/healthz")
    assert code == 200
    assert content_type == "application/json"
    assert json.loads(body)["alive"] is True


def test_head_answers_like_get_without_a_body(endpoint: HttpEndpoint) -> None:
    request = urllib.request.Request(f"{endpoint.address.url}/healthz", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
        assert response.read() == b""
    # the connection is still usable: the next GET gets its whole answer
    assert get(endpoint, "/healthz")[0] == 200


def test_healthz_fails_when_the_loop_stops_beating(metrics: Metrics) -> None:
    clock = FakeClock()
    with HttpEndpoint(
        LOOPBACK, metrics.registry, dict, liveness_timeout=30, clock=clock
    ) as endpoint:
        clock.now += 29
        assert get(endpoint, "/healthz")[0] == 200
        clock.now += 2
        code, _, body = get(endpoint, "/healthz")
        assert code == 503
        assert json.loads(body) == {"alive": False, "seconds_since_last_beat": 31.0}
        endpoint.beat()
        assert get(endpoint, "/healthz")[0] == 200


def test_readyz_is_503_until_marked_ready(endpoint: HttpEndpoint) -> None:
    assert get(endpoint, "/readyz")[0] == 503
    endpoint.set_ready()
    code, _, body = get(endpoint, "/readyz")
    assert code == 200
    assert json.loads(body) == {"ready": True}


def test_metrics_serves_the_registry_as_text_exposition(
    endpoint: HttpEndpoint, metrics: Metrics
) -> None:
    metrics.record_reconcile(Result.APPLIED, finished_at=42.0)
    code, content_type, body = get(endpoint, "/metrics")
    assert code == 200
    assert content_type.startswith("text/plain")
    samples = {
        (s.name, s.labels.get("outcome")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("tfs_reconciler_reconciles_total", "applied")] == 1
    assert samples[("tfs_reconciler_last_success_timestamp_seconds", None)] == 42.0


def test_status_serves_the_document_the_daemon_supplies(endpoint: HttpEndpoint) -> None:
    code, content_type, body = get(endpoint, "/status")
    assert code == 200
    assert content_type == "application/json"
    assert json.loads(body) == {"commit": "abc123", "models": {"animals": {"stable": 2}}}


def test_status_is_read_fresh_on_every_request(metrics: Metrics) -> None:
    calls: list[int] = []

    def status() -> Mapping[str, Any]:
        calls.append(1)
        return {"passes": len(calls)}

    with HttpEndpoint(LOOPBACK, metrics.registry, status) as endpoint:
        assert read_status(endpoint.address) == {"passes": 1}
        assert read_status(str(endpoint.address)) == {"passes": 2}


def test_a_failing_status_callback_answers_500(metrics: Metrics) -> None:
    def status() -> Mapping[str, Any]:
        raise RuntimeError("state folder unreadable")

    with HttpEndpoint(LOOPBACK, metrics.registry, status) as endpoint:
        code, _, body = get(endpoint, "/status")
        assert code == 500
        assert "state folder unreadable" in json.loads(body)["error"]
        with pytest.raises(StatusUnavailableError, match="answered 500"):
            read_status(endpoint.address)


def test_unknown_paths_answer_404_listing_the_known_ones(endpoint: HttpEndpoint) -> None:
    code, _, body = get(endpoint, "/nope")
    assert code == 404
    assert "/status" in json.loads(body)["paths"]


def test_stop_closes_the_port(metrics: Metrics) -> None:
    endpoint = HttpEndpoint(LOOPBACK, metrics.registry, dict).start()
    address = endpoint.address
    endpoint.stop()
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((address.host, address.port), timeout=2),
    ):
        pass
    with pytest.raises(StatusUnavailableError, match="no tfs-reconciler daemon answered"):
        read_status(address, timeout=2)


def test_a_busy_port_is_reported_at_start(endpoint: HttpEndpoint, metrics: Metrics) -> None:
    with pytest.raises(OSError):
        HttpEndpoint(endpoint.address, metrics.registry, dict).start()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9109", Address("127.0.0.1", 9109)),
        ("localhost:0", Address("localhost", 0)),
        (":9109", Address("0.0.0.0", 9109)),
        ("[::1]:9109", Address("::1", 9109)),
    ],
)
def test_addresses_are_host_colon_port(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9109", "localhost", "host:http", "::1:9109", "h:70000"])
def test_malformed_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad address"):
        parse_address(text)


def test_ipv6_addresses_print_with_brackets() -> None:
    assert str(Address("::1", 9109)) == "[::1]:9109"
    assert Address("127.0.0.1", 9109).url == "http://127.0.0.1:9109"


# --- bounded under a flood (issue 10) -------------------------------------------------------

FLOOD_LIMITS = Limits(connections=32, idle_timeout=2.0, request_timeout=2.0)


def healthz_answers(endpoint: HttpEndpoint, within: float = 60.0) -> int:
    """The status of the first /healthz that answers within the deadline (a probe may find
    its connection evicted by the flood and try again)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return get(endpoint, "/healthz")[0]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_flood_of_idle_and_slowloris_connections_costs_no_thread_and_healthz_answers(
    metrics: Metrics,
) -> None:
    """Issue 10: a thread per connection with no limit died at 205 idle connections. Here 300
    connections (150 idle, 150 sending a request a byte at a time) add no thread, /healthz
    answers throughout, and the server closes every one of them, the trickling ones too."""
    with HttpEndpoint(LOOPBACK, metrics.registry, dict, limits=FLOOD_LIMITS) as endpoint:
        assert healthz_answers(endpoint) == 200
        threads = threading.active_count()
        with Flood(endpoint.address.host, endpoint.address.port, idle=150, slow=150) as flood:
            assert healthz_answers(endpoint) == 200
            # The flood's own trickling thread is the only one added.
            assert threading.active_count() <= threads + 1
            assert healthz_answers(endpoint) == 200
            deadline = time.monotonic() + 60
            while flood.still_open() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert flood.still_open() == 0
        assert healthz_answers(endpoint) == 200


def test_at_the_connection_limit_a_new_connection_is_answered(metrics: Metrics) -> None:
    """Full of idle connections, the server makes room for a new one (the quietest goes)
    rather than leaving the probe in the kernel's queue until an idle one times out."""
    limits = Limits(connections=8, idle_timeout=3600.0, request_timeout=3600.0)
    with (
        HttpEndpoint(LOOPBACK, metrics.registry, dict, limits=limits) as endpoint,
        Flood(endpoint.address.host, endpoint.address.port, idle=40, slow=0),
    ):
        assert healthz_answers(endpoint) == 200
        assert get(endpoint, "/metrics")[0] == 200


def test_an_oversized_or_malformed_request_is_refused_and_the_server_serves_on(
    endpoint: HttpEndpoint,
) -> None:
    host, port = endpoint.address.host, endpoint.address.port
    for raw in (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (128 << 10) + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",  # TLS
        b"GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(raw)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1."), answer[:80]
        assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:80]
    assert get(endpoint, "/healthz")[0] == 200


def test_the_idle_server_waits_in_its_poll_rather_than_spinning() -> None:
    """waitress reads its loop timeout and idle timeout as whole seconds: a fraction became 0,
    and the idle daemon's HTTP thread spun at a third of a core (bench `cost`: 28 % at rest)."""
    from reconciler.http_server import BoundedHttpServer

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    server = BoundedHttpServer(
        "127.0.0.1", 0, app, Limits(idle_timeout=0.5, request_timeout=0.5), name="idle"
    ).start()
    try:
        adj = server._server.adj  # type: ignore[union-attr]
        assert adj.asyncore_loop_timeout >= 1
        assert adj.channel_timeout >= 1  # 0 would close every connection at once
        assert adj.cleanup_interval >= 1
    finally:
        server.stop()


def test_stop_closes_the_server_even_when_its_wakeup_pipe_was_closed_under_it() -> None:
    """A descriptor closed twice elsewhere in the process can be the trigger's pipe: stop()
    must still close the port and end the loop, not raise EBADF (seen once in a test run)."""
    import os

    from reconciler.http_server import BoundedHttpServer

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    server = BoundedHttpServer("127.0.0.1", 0, app, Limits(), name="lost-trigger").start()
    host, port = server.bound
    thread = server._thread
    os.close(server._server.trigger.trigger)  # type: ignore[union-attr]
    server.stop()
    assert thread is not None and not thread.is_alive()
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=2):
        pass
