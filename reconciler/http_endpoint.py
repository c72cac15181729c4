"""The daemon's HTTP endpoint: health, readiness, metrics and status.

A bounded waitress server (``reconciler.http_server``) in a background thread serves:

- ``/healthz``: 200 while the daemon's loop is alive, i.e. it called
  ``beat()`` within ``liveness_timeout`` seconds; 503 otherwise.
- ``/readyz``: 503 until ``set_ready()`` (after the first successful
  reconcile), 200 after; with a ``readiness`` callback, its answer (given
  whether ``set_ready()`` was called): model-aware readiness in a pod.
- ``/readyz/<replica>``: in a fleet, model-aware readiness of that replica's
  TFS (``readiness.replica_readiness``): 200, or 503 with the reasons; 404 for
  a name the ``replica_readiness`` callback does not list.
- ``/metrics``: the Prometheus text exposition of the given registry.
- ``/status``: the JSON document returned by the daemon's ``status`` callback
  (``tfs-reconciler status`` reads it with ``read_status()``).

The endpoint only reports; it never triggers anything.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from reconciler.http_server import DEFAULT_LIMITS, BoundedHttpServer, Limits, StartResponse
from reconciler.readiness import Readiness

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
# The fleet's per-replica checks, by name, as they are now (discovery may change the set).
ReplicaReadiness = Callable[[], Mapping[str, Callable[[bool], Readiness]]]
READYZ_PREFIX = "/readyz/"


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
    port when 0 was asked for). Connections are bounded, idle and slow ones are
    closed (see ``reconciler.http_server``), so a flood of connections costs
    sockets up to a limit, never a thread each, and ``/healthz`` still answers.
    """

    def __init__(
        self,
        address: Address,
        registry: CollectorRegistry,
        status: StatusCallback,
        *,
        liveness_timeout: float | None = None,
        readiness: Callable[[bool], Readiness] | None = None,
        replica_readiness: ReplicaReadiness | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._readiness_check = readiness
        self._replica_readiness = replica_readiness
        self._requested = address
        self._registry = registry
        self._status = status
        self._liveness_timeout = liveness_timeout
        self._clock = clock
        self._last_beat = clock()
        self._ready = False
        self._lock = threading.Lock()
        self._server = BoundedHttpServer(
            address.host, address.port, self._app, limits, name="tfs-reconciler-http"
        )
        self._started = False

    # --- called by the daemon -------------------------------------------------

    def beat(self) -> None:
        """The loop is alive: call once per loop iteration."""
        with self._lock:
            self._last_beat = self._clock()
        evicted, slow = self._server.shed() if self._started else (0, 0)
        if evicted or slow:
            log.warning("http_connections_shed", evicted=evicted, too_slow=slow)

    def set_ready(self, ready: bool = True) -> None:
        with self._lock:
            self._ready = ready

    @property
    def address(self) -> Address:
        if not self._started:
            raise RuntimeError("the HTTP endpoint is not started")
        host, port = self._server.bound
        return Address(host=host, port=port)

    def start(self) -> HttpEndpoint:
        if self._started:
            raise RuntimeError("the HTTP endpoint is already started")
        self._server.start()
        self._started = True
        log.info("http_endpoint_started", address=str(self.address))
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._server.stop()
        self._started = False
        log.info("http_endpoint_stopped")

    def __enter__(self) -> HttpEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- answers ----------------------------------------------------------------

    def _health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            age = self._clock() - self._last_beat
        alive = self._liveness_timeout is None or age <= self._liveness_timeout
        body = {"alive": alive, "seconds_since_last_beat": round(age, 3)}
        return (HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE), body

    def _readiness(self) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            ready = self._ready
        if self._readiness_check is not None:
            try:
                answer = self._readiness_check(ready)
            except Exception as error:  # a fault of the check: not ready, and said why
                log.exception("readiness_check_failed")
                answer = Readiness(False, (f"the readiness check failed: {error!r}",))
            ready, body = answer.ready, answer.document()
            return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), body
        return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), {"ready": ready}

    def _replica(self, name: str) -> tuple[HTTPStatus, dict[str, Any]]:
        checks = self._replica_readiness() if self._replica_readiness is not None else {}
        check = checks.get(name)
        if check is None:
            body = {"error": f"no replica {name!r} in the fleet", "replicas": sorted(checks)}
            return HTTPStatus.NOT_FOUND, body
        try:
            answer = check(True)
        except Exception as error:  # a fault of the check: not ready, and said why
            log.exception("replica_readiness_check_failed", replica=name)
            answer = Readiness(False, (f"the readiness check failed: {error!r}",))
        code = HTTPStatus.OK if answer.ready else HTTPStatus.SERVICE_UNAVAILABLE
        return code, {"replica": name, **answer.document()}

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        code: HTTPStatus
        if method not in ("GET", "HEAD"):  # load balancers and uptime checkers probe with HEAD
            code, content_type, body = _json(
                HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} is not served here"}
            )
        elif path == "/healthz":
            code, content_type, body = _json(*self._health())
        elif path == "/readyz":
            code, content_type, body = _json(*self._readiness())
        elif path.startswith(READYZ_PREFIX):
            code, content_type, body = _json(*self._replica(path.removeprefix(READYZ_PREFIX)))
        elif path == "/metrics":
            code, content_type, body = (
                HTTPStatus.OK,
                CONTENT_TYPE_LATEST,
                generate_latest(self._registry),
            )
        elif path == "/status":
            try:
                document = dict(self._status())
            except Exception as error:
                log.exception("status_callback_failed")
                code, content_type, body = _json(
                    HTTPStatus.INTERNAL_SERVER_ERROR, {"error": repr(error)}
                )
            else:
                code, content_type, body = _json(HTTPStatus.OK, document)
        else:
            code, content_type, body = _json(
                HTTPStatus.NOT_FOUND, {"error": f"no such path {path}", "paths": _PATHS}
            )
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        if code is HTTPStatus.METHOD_NOT_ALLOWED:
            headers.append(("Allow", "GET, HEAD"))
        start_response(f"{code.value} {code.phrase}", headers)
        return [] if method == "HEAD" else [body]


def _json(code: HTTPStatus, body: Mapping[str, Any]) -> tuple[HTTPStatus, str, bytes]:
    text = json.dumps(body, indent=2, sort_keys=True, default=str) + "\n"
    return code, "application/json", text.encode()


_PATHS = ["/healthz", "/readyz", "/readyz/<replica>", "/metrics", "/status"]


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
