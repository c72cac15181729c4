"""The daemon's HTTP endpoint: health, readiness, metrics and status.

A stdlib ``ThreadingHTTPServer`` in a background thread serves:

- ``/healthz``: 200 while the daemon's loop is alive, i.e. it called
  ``beat()`` within ``liveness_timeout`` seconds; 503 otherwise.
- ``/readyz``: 503 until ``set_ready()`` (after the first successful
  reconcile), 200 after.
- ``/metrics``: the Prometheus text exposition of the given registry.
- ``/status``: the JSON document returned by the daemon's ``status`` callback
  (``tfs-reconciler status`` reads it with ``read_status()``).

The endpoint only reports; it never triggers anything.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = [
    "DEFAULT_ADDRESS",
    "Address",
    "HttpEndpoint",
    "StatusUnavailableError",
    "parse_address",
    "read_status",
]

DEFAULT_ADDRESS = "127.0.0.1:9109"

log = structlog.get_logger(__name__)

StatusCallback = Callable[[], Mapping[str, Any]]


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self}"


def parse_address(text: str) -> Address:
    """Parse ``host:port``, ``[v6]:port`` or ``:port`` (all interfaces); port 0 = any."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad address {text!r}; expected host:port, e.g. {DEFAULT_ADDRESS}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad address {text!r}; write an IPv6 host in brackets: [::1]:9109")
    return Address(host=host or "0.0.0.0", port=int(port_text))


class HttpEndpoint:
    """The server; ``start()`` binds and serves, ``stop()`` shuts down.

    Use as a context manager. ``address`` is the bound address (with the real
    port when 0 was asked for).
    """

    def __init__(
        self,
        address: Address,
        registry: CollectorRegistry,
        status: StatusCallback,
        *,
        liveness_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._requested = address
        self._registry = registry
        self._status = status
        self._liveness_timeout = liveness_timeout
        self._clock = clock
        self._last_beat = clock()
        self._ready = False
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- called by the daemon -------------------------------------------------

    def beat(self) -> None:
        """The loop is alive: call once per loop iteration."""
        with self._lock:
            self._last_beat = self._clock()

    def set_ready(self, ready: bool = True) -> None:
        with self._lock:
            self._ready = ready

    @property
    def address(self) -> Address:
        if self._server is None:
            raise RuntimeError("the HTTP endpoint is not started")
        host, port = self._server.server_address[:2]
        return Address(host=str(host), port=int(port))

    def start(self) -> HttpEndpoint:
        if self._server is not None:
            raise RuntimeError("the HTTP endpoint is already started")
        server = _Server(self._requested, _Handler, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="tfs-reconciler-http",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.info("http_endpoint_started", address=str(self.address))
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        self._server = self._thread = None
        log.info("http_endpoint_stopped")

    def __enter__(self) -> HttpEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- answers, used by the handler ----------------------------------------

    def _health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            age = self._clock() - self._last_beat
        alive = self._liveness_timeout is None or age <= self._liveness_timeout
        body = {"alive": alive, "seconds_since_last_beat": round(age, 3)}
        return (HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE), body

    def _readiness(self) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            ready = self._ready
        return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), {"ready": ready}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: Address, handler: type[BaseHTTPRequestHandler], endpoint: HttpEndpoint
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        self.endpoint = endpoint
        super().__init__((address.host, address.port), handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "tfs-reconciler"
    _head = False

    def do_HEAD(self) -> None:  # load balancers and uptime checkers probe with HEAD
        self._head = True
        self._answer()

    def do_GET(self) -> None:
        self._head = False
        self._answer()

    def _answer(self) -> None:
        endpoint = cast(_Server, self.server).endpoint
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._send_json(*endpoint._health())
        elif path == "/readyz":
            self._send_json(*endpoint._readiness())
        elif path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(endpoint._registry))
        elif path == "/status":
            try:
                document = dict(endpoint._status())
            except Exception as error:
                log.exception("status_callback_failed")
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": repr(error)})
            else:
                self._send_json(HTTPStatus.OK, document)
        else:
            self._send_json(
                HTTPStatus.NOT_FOUND,
                {"error": f"no such path {path}", "paths": _PATHS},
            )

    def _send_json(self, code: HTTPStatus, body: Mapping[str, Any]) -> None:
        text = json.dumps(body, indent=2, sort_keys=True, default=str) + "\n"
        self._send(code, "application/json", text.encode())

    def _send(self, code: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not self._head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http_request", client=self.client_address[0], request=format % args)


_PATHS = ["/healthz", "/readyz", "/metrics", "/status"]


class StatusUnavailableError(RuntimeError):
    """No daemon answered at the address, or it answered with an error."""


def read_status(address: Address | str, timeout: float = 5.0) -> dict[str, Any]:
    """Fetch ``/status`` from a running daemon (for ``tfs-reconciler status``)."""
    if isinstance(address, str):
        address = parse_address(address)
    host = "127.0.0.1" if address.host in ("0.0.0.0", "") else address.host
    target = Address(host="::1" if host == "::" else host, port=address.port)
    url = f"{target.url}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise StatusUnavailableError(f"the daemon at {url} answered {error.code}") from error
    except (OSError, ValueError) as error:
        raise StatusUnavailableError(
            f"no tfs-reconciler daemon answered at {url}: {error}"
        ) from error
    if not isinstance(document, dict):
        raise StatusUnavailableError(f"the daemon at {url} sent no JSON object")
    return document
