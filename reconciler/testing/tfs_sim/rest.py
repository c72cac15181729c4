"""The REST API, as TFS serves it (stdlib ThreadingHTTPServer).

Follows ``model_servers/http_server.cc`` (``RestApiRequestDispatcher``: only paths matching
``(?i)/v1/.*`` are handled, others get an empty 404; OPTIONS is a CORS preflight;
``ToHTTPStatusCode``), ``http_rest_api_util.cc`` (``ParseModelInfo``: the case-insensitive URL
patterns, ``curl_easy_unescape`` of the model name and label, the version through
``SimpleAtoi``; its errors answer with an empty body) and ``http_rest_api_handler.cc``
(``ProcessRequest``: ``Malformed request: METHOD PATH`` for anything else, the verb compared
in lower case; predict, classify and regress parse the body before the model is looked up):

- ``GET /v1/models/NAME[/versions/V|/labels/L]``: status (a label is ignored);
- ``GET /v1/models/NAME[/versions/V|/labels/L]/metadata``: metadata, ``model_spec.version``
  is the resolved version;
- ``POST /v1/models/NAME[/versions/V|/labels/L]:(predict|classify|regress)``.

Errors are ``{"error": "..."}`` (``MakeJsonFromStatus``). Each predict logs which version
answered it (event ``predict``).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconciler.testing.tfs_sim.core import Servable, ServerCore
from reconciler.testing.tfs_sim.disk import simple_atoi
from reconciler.testing.tfs_sim.errors import HTTP_STATUS, Code, TfsError
from reconciler.testing.tfs_sim.json_tensor import (
    DenseTensor,
    classify_regress_examples,
    error_json,
    parse_json,
    predict_inputs,
    request_signature_name,
)
from reconciler.testing.tfs_sim.lifecycle import VersionStatus
from reconciler.testing.tfs_sim.logs import log_event
from reconciler.testing.tfs_sim.predict import (
    DEFAULT_SIGNATURE,
    classify_or_regress,
    predict,
)
from reconciler.testing.tfs_sim.savedmodel import SavedModelInfo
from reconciler.tfs_rest import MAX_HEADER_LINE, MAX_HEADERS, parse_header_lines

log = logging.getLogger("tfs_sim.rest")

SIM_EVENTS_PATH = "/sim/events"  # the simulator's event log (not TFS's)
HANDLED_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
PREDICTION_URL = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_URL = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)


class _NoJson(Exception):
    """A ParseModelInfo error: TFS answers it without a JSON body."""

    def __init__(self, error: TfsError) -> None:
        super().__init__(error.message)
        self.error = error


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
    raw_requestline: bytes  # set by handle_one_request
    protocol_version = "HTTP/1.1"
    # An answer goes out in one send: headers and body are buffered (the server flushes after
    # each request), as TFS's evhttp writes a reply; unbuffered, the headers and the body were
    # two sends, a syscall and a packet more each. With Nagle on, a keep-alive client's
    # delayed ACK held a second send back about 40 ms; it stays off for answers larger than
    # the buffer.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` for a plain HTTP/1.x request, its header
        block split into lines here: the stdlib hands it to the email package's FeedParser,
        which was ~45 % of the simulator's CPU while a client read 1,000 models' status.
        The headers come out as FeedParser makes them (``set_raw`` of the name and the value
        with leading blanks and the line end cut); any other request line, and a header block
        with a folded or odd line, take the stdlib's own way."""
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            return super().parse_request()
        lines = []
        while True:
            line = self.rfile.readline(MAX_HEADER_LINE + 1)
            if len(line) > MAX_HEADER_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            lines.append(line)
            if len(lines) > MAX_HEADERS:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
        self.command, self.path, self.request_version = words
        if self.path.startswith("//"):  # as the stdlib does (gh-87389)
            self.path = "/" + self.path.lstrip("/")
        self.close_connection = words[2] == "HTTP/1.0"
        self.headers = headers = parse_header_lines(lines)
        connection = headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if headers.get("Expect", "").lower() == "100-continue" and words[2] == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        if method == "GET" and path == SIM_EVENTS_PATH:
            self._sim_events(url.query)
            return
        if not HANDLED_PATH.fullmatch(path):
            self._reply(404, "")
            return
        if method == "OPTIONS":
            origin = self.headers.get("Origin") or ""
            self._reply(200 if re.search(r"https?://", origin) else 400, "")
            return
        try:
            self._reply(200, self._route(method, path, body))
        except _NoJson as e:
            self._reply(HTTP_STATUS.get(e.error.code, 500), "")
        except TfsError as e:
            self._reply(e.http_status, error_json(e.message))
        except Exception as e:  # a bug in the simulator: say so rather than drop the connection
            log.exception("rest_handler_failed path=%s", self.path)
            self._reply(500, error_json(f"tfs-sim internal error: {e!r}"))

    def _route(self, method: str, path: str, body: bytes) -> str:
        """``HttpRestApiHandler::ProcessRequest``."""
        malformed = TfsError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        pattern = {"POST": PREDICTION_URL, "GET": STATUS_URL}.get(method)
        match = pattern.fullmatch(path) if pattern is not None else None
        model, version, label, tail = match.groups() if match else (None, None, None, None)
        model = _decode(model or "", "Failed to decode model name:")
        number = None
        if version:
            number = simple_atoi(version)
            if number is None:
                raise _NoJson(
                    TfsError(
                        Code.INVALID_ARGUMENT,
                        f"Failed to convert version: {version} to numeric.",
                    )
                )
        label = _decode(label, "Failed to decode model version label:") if label else None
        core = self.server.core
        if match is None:
            raise malformed
        if method == "POST":
            if tail in ("classify", "regress"):
                return self._classify_or_regress(model, number, label, tail, body)
            if tail == "predict":
                return self._predict(model, number, label, body)
            raise malformed
        if not model:
            raise TfsError(Code.INVALID_ARGUMENT, "Missing model name in request.")
        if tail == "metadata":
            return self.server.metadata_text(model, core.resolve(model, number, label))
        return self.server.status_text(core.status(model, number))

    def _predict(self, model: str, version: int | None, label: str | None, body: bytes) -> str:
        """``ProcessPredictRequest``: the body first, then the model (``GetInfoMap``)."""
        doc = parse_json(body)
        signature_name = request_signature_name(doc)
        servable = self.server.core.resolve(model, version, label)
        name = signature_name or DEFAULT_SIGNATURE
        signature = servable.info.signatures.get(name)
        if signature is None:
            raise TfsError(
                Code.INVALID_ARGUMENT,
                f'Serving signature name: "{name}" not found in signature def',
            )
        dtypes = {alias: spec.dtype for alias, spec in signature.inputs.items()}
        form, inputs = predict_inputs(doc, signature_name, dtypes)
        servable = self.server.core.resolve(model, version, label)
        outputs = predict(servable, signature_name, inputs)
        via = f"label:{label}" if label else (f"version:{version}" if version else "latest")
        log_event(log, "predict", model=model, version=servable.version, via=via, verb="predict")
        return json.dumps(tensors_json(outputs, form))

    def _classify_or_regress(
        self, model: str, version: int | None, label: str | None, kind: str, body: bytes
    ) -> str:
        """``ProcessClassifyRequest``/``ProcessRegressRequest``: body, then the servable."""
        doc = parse_json(body)
        signature_name = request_signature_name(doc)
        classify_regress_examples(doc)
        servable: Servable = self.server.core.resolve(model, version, label)
        classify_or_regress(servable, signature_name, kind)
        return ""

    def _sim_events(self, query: str) -> None:
        """``GET /sim/events?since=N`` (the simulator's own, see :mod:`.events`)."""
        since = urllib.parse.parse_qs(query).get("since", ["0"])[-1]
        if not since.isdigit():
            self._reply(400, error_json(f"since wants a whole number, got {since!r}"))
            return
        self._reply(200, json.dumps({"events": self.server.core.events.since(int(since))}))

    def _reply(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _decode(text: str, what: str) -> str:
    """``DecodeArg`` (``curl_easy_unescape``: ``%XX`` only, ``+`` stays)."""
    del what  # curl_easy_unescape does not fail on a malformed escape; it keeps it
    return urllib.parse.unquote(text, errors="surrogateescape")


def _pretty(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=1) + "\n"


def _float(value: float) -> float | str:
    """``WriteDecimal``: six significant digits (``%g``)."""
    return float(f"{value:g}")


def _nest(tensor: DenseTensor, values: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return values[0]
    step = len(values) // shape[0] if shape[0] else 0
    return [_nest(tensor, values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def _plain(tensor: DenseTensor) -> list[Any]:
    return [
        _float(v)
        if isinstance(v, float)
        else v.decode("utf-8", "replace")
        if isinstance(v, bytes)
        else v
        for v in tensor.values
    ]


def tensors_json(outputs: dict[str, DenseTensor], form: str) -> dict[str, Any]:
    """``MakeJsonFromTensors``: ``{"predictions": [...]}`` (row format: one value per
    instance, an object per instance when there are several outputs) or ``{"outputs": ...}``
    (columnar: the tensor, or an object of tensors)."""
    if form == "row":
        rows: list[Any] = []
        batch = next(iter(outputs.values())).shape[0]
        for row in range(batch):
            item = {name: _nest(t, _plain(t), t.shape)[row] for name, t in sorted(outputs.items())}
            rows.append(next(iter(item.values())) if len(item) == 1 else item)
        return {"predictions": rows}
    columns = {name: _nest(t, _plain(t), t.shape) for name, t in sorted(outputs.items())}
    return {"outputs": next(iter(columns.values())) if len(columns) == 1 else columns}


class RestServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows the ServerCore."""

    daemon_threads = True
    allow_reuse_address = True
    # TFS's evhttp_server binds with libevent's evhttp_bind_socket_with_handle, which listens
    # with a backlog of 128; the stdlib's 5 dropped the SYNs of a client opening eight
    # connections at once, each then sent again a second later.
    request_queue_size = 128

    METADATA_CACHE = 20_000  # answers kept (of each kind); past it the cache starts over

    def __init__(self, address: tuple[str, int], core: ServerCore) -> None:
        self.core = core
        # A loaded version's metadata answer never changes: rendered once (pretty JSON is
        # encoded in pure Python, the largest cost of a label lookup), reused until the
        # version's SavedModelInfo is another one. Each entry holds its info, so the id in
        # its key cannot be reused while it is kept.
        self._metadata: dict[tuple[str, int, int], tuple[SavedModelInfo, str]] = {}
        self._status: dict[tuple[tuple[object, ...], ...], str] = {}
        super().__init__(address, RestHandler)

    def status_text(self, statuses: list[VersionStatus]) -> str:
        """The body of a status answer (``GetModelStatus`` in JSON), rendered once for each
        set of states seen (the states of 1,000 idle models are a handful of sets)."""
        key = tuple(
            (s.version, s.state, s.error.code, s.error.message) if s.error else (s.version, s.state)
            for s in statuses
        )
        text = self._status.get(key)
        if text is None:
            text = _pretty(status_json(statuses))
            if len(self._status) >= self.METADATA_CACHE:
                self._status.clear()
            self._status[key] = text
        return text

    def metadata_text(self, model: str, servable: Servable) -> str:
        """The body of a metadata answer (``GetModelMetadata`` in JSON)."""
        key = (model, servable.version, id(servable.info))
        kept = self._metadata.get(key)
        if kept is not None and kept[0] is servable.info:
            return kept[1]
        text = _pretty(
            {
                "model_spec": {
                    "name": model,
                    "signature_name": "",
                    "version": str(servable.version),
                },
                "metadata": {"signature_def": servable.info.metadata_json()},
            }
        )
        if len(self._metadata) >= self.METADATA_CACHE:
            self._metadata.clear()
        self._metadata[key] = (servable.info, text)
        return text
