"""The REST API, as TFS's http_rest_api_handler serves it (stdlib ThreadingHTTPServer).

- ``GET /v1/models/NAME[/versions/V|/labels/L]``: status (a label is ignored);
- ``GET /v1/models/NAME[/versions/V|/labels/L]/metadata``: metadata, ``model_spec.version``
  is the resolved version;
- ``POST /v1/models/NAME[/versions/V|/labels/L]:(predict|classify|regress)``.

Errors are ``{"error": "..."}`` with the HTTP status of the TFS error code. Each predict logs
which version answered it (event ``predict``).
"""

from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconciler.testing.tfs_sim.core import ServerCore
from reconciler.testing.tfs_sim.errors import Code, TfsError
from reconciler.testing.tfs_sim.lifecycle import VersionStatus
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.predict import predict, signature_for

log = logging.getLogger("tfs_sim.rest")

_MODEL_URL = re.compile(
    r"/v1/models/(?P<model>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?/?"
)


def status_json(statuses: list[VersionStatus]) -> dict[str, Any]:
    """A GetModelStatusResponse as TFS renders it in JSON."""
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.name,
                "status": {
                    "error_code": s.error.code.name if s.error else "OK",
                    "error_message": s.error.message if s.error else "",
                },
            }
            for s in statuses
        ]
    }


class RestHandler(BaseHTTPRequestHandler):
    """Routes one request; ``server.core`` is the ServerCore."""

    server: RestServer
    protocol_version = "HTTP/1.1"
    # An answer is two writes (headers, body); with Nagle on, a keep-alive client's delayed
    # ACK held the second one back about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            self._reply(200, self._route(method, self.path.split("?", 1)[0], body))
        except TfsError as e:
            self._reply(e.http_status, {"error": e.message})
        except Exception as e:  # a bug in the simulator: say so rather than drop the connection
            log.exception("rest_handler_failed path=%s", self.path)
            self._reply(500, {"error": f"tfs-sim internal error: {e!r}"})

    def _route(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        match = _MODEL_URL.fullmatch(path)
        if match is None or (method == "GET") != (match["verb"] is None):
            raise TfsError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        core = self.server.core
        model, label = match["model"], match["label"]
        version = int(match["version"]) if match["version"] else None
        if method == "GET" and not match["metadata"]:
            return status_json(core.status(model, version))
        servable = core.resolve(model, version, label)
        if match["metadata"]:
            return {
                "model_spec": {
                    "name": model,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": {"signature_def": servable.info.metadata_json()},
            }
        via = f"label:{label}" if label else (f"version:{version}" if version else "latest")
        log_event(
            log, "predict", model=model, version=servable.version, via=via, verb=match["verb"]
        )
        try:
            request = json.loads(body or b"null")
        except ValueError as e:
            raise TfsError(Code.INVALID_ARGUMENT, f"JSON Parse error: {e}") from e
        if match["verb"] != "predict":
            name = str(request.get("signature_name", "")) if isinstance(request, dict) else ""
            signature_for(servable, name, f"tensorflow/serving/{match['verb']}")
            raise TfsError(Code.UNIMPLEMENTED, f":{match['verb']} is not simulated")
        return predict(servable, request)

    def _reply(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, indent=1).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class RestServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows the ServerCore."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], core: ServerCore) -> None:
        self.core = core
        super().__init__(address, RestHandler)
