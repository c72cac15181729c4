"""TFS's REST API, as a client: model status, label resolution, predict."""

from __future__ import annotations

import email.parser
import http.client
import json
import re
import threading
import types
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from reconciler.state import LiveModel, LiveVersion, TfsUnreachable

MAX_HEADER_LINE = 65536  # http.client's limits on a header line and on the number of headers
MAX_HEADERS = 100
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[^\r\n]*\r?\n\Z")  # FeedParser's headerRE


def parse_header_lines(lines: list[bytes]) -> http.client.HTTPMessage:
    """The headers of a header block (its lines, the blank one last) as
    ``http.client.parse_headers`` makes them: plain ``Name: value`` lines are split here
    (``set_raw`` of the name and of the value without its leading blanks and line end, as
    the email package's FeedParser does), anything else goes to FeedParser itself, which is
    ten times slower: the stdlib spent ~45 % of the CPU of a 1,000-model live read there."""
    if all(_HEADER_LINE.match(line) for line in lines[:-1]):
        headers = http.client.HTTPMessage()
        for line in lines[:-1]:
            name, value = line.decode("iso-8859-1").split(":", 1)
            headers.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
        return headers
    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)


def _parse_headers(fp: Any, _class: Any = None) -> http.client.HTTPMessage:
    lines = []
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            return parse_header_lines(lines)


class _Response(http.client.HTTPResponse):
    """http.client's response, its headers read by parse_header_lines: the stdlib's own
    `begin` (status line, 100-continue, chunked, keep-alive), with the module's
    `parse_headers` it calls by name bound to _parse_headers."""

    begin = types.FunctionType(
        http.client.HTTPResponse.begin.__code__,
        {**vars(http.client), "parse_headers": _parse_headers},
        "begin",
    )


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # parsed JSON, or the raw text when it is not JSON


class TfsRest:
    """A small client for `GET /v1/models/...` and `POST ...:predict` on one TFS."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()  # each thread's kept-alive connection

    def request(self, method: str, path: str, body: Any = None) -> Response:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        # A GET goes over the calling thread's kept-alive connection (reading the status of
        # a thousand models is thousands of GETs: a connection each would cost more than the
        # answers); one the server has closed meanwhile is replaced once.
        reuse = method == "GET"
        for attempt in (1, 2):
            kept = getattr(self._local, "connection", None) if reuse else None
            connection = kept or self._connect()
            try:
                connection.request(method, self._prefix + path, body=payload, headers=headers)
                reply = connection.getresponse()
                raw = reply.read()
            except (TimeoutError, OSError, http.client.HTTPException) as error:
                connection.close()
                self._local.connection = None
                if kept is not None and attempt == 1:
                    continue
                raise TfsUnreachable(f"TFS at {self.url} did not answer: {error}") from None
            if reuse and not reply.will_close:
                self._local.connection = connection
            else:
                connection.close()
                self._local.connection = None
            break
        try:
            parsed: Any = json.loads(raw)
        except (ValueError, RecursionError):
            parsed = raw.decode("utf-8", "replace")
        return Response(reply.status, parsed)

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self.timeout)
        connection.response_class = _Response
        return connection

    def model_status(self, name: str) -> LiveModel:
        reply = self.request("GET", f"/v1/models/{quote(name, safe='')}")
        if reply.status == 404:
            return LiveModel(name, found=False)
        if reply.status != 200 or not isinstance(reply.body, dict):
            raise TfsUnreachable(f"TFS at {self.url} answered {reply.status}: {reply.body}")
        versions = []
        try:
            for entry in reply.body.get("model_version_status", []):
                status = entry.get("status") or {}
                versions.append(
                    LiveVersion(
                        version=int(entry["version"]),
                        state=str(entry.get("state", "UNKNOWN")),
                        error_code=str(status.get("error_code", "OK")),
                        error_message=str(status.get("error_message", "")),
                    )
                )
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise TfsUnreachable(
                f"TFS at {self.url} answered a status that is not TFS's: {error!r}"
            ) from None
        return LiveModel(name, found=True, versions=tuple(versions))

    def label_version(self, name: str, label: str) -> int | None:
        path = f"/v1/models/{quote(name, safe='')}/labels/{quote(label, safe='')}/metadata"
        reply = self.request("GET", path)
        if reply.status != 200 or not isinstance(reply.body, dict):
            return None
        spec = reply.body.get("model_spec")
        version = spec.get("version") if isinstance(spec, dict) else None
        try:
            return int(version) if version not in (None, "") else None
        except (TypeError, ValueError):  # not a version number: the label resolves nowhere
            return None

    def predict(
        self, name: str, body: Any, *, version: int | None = None, label: str | None = None
    ) -> Response:
        path = f"/v1/models/{quote(name, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return self.request("POST", path + ":predict", body)
