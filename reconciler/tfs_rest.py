"""TFS's REST API, as a client: model status, label resolution, predict."""

from __future__ import annotations

import email.parser
import http.client
import json
import re
import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast
from urllib.parse import quote, urlsplit

from reconciler.fan_out import LIVE_READERS, each_in_threads
from reconciler.http_many import get_many
from reconciler.http_wire import Answer, BadAnswer
from reconciler.observe import read_one_model
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
        # Requests go out in ASCII: a host name as IDNA (as http.client would write its Host
        # header), a path prefix percent-quoted (its escapes kept).
        try:
            host = parts.hostname
            self._host = host if host.isascii() else host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"not an http(s) URL: {url}") from None
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = quote(parts.path.rstrip("/"), safe="/%!$&'()*+,;=:@")
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
        return Response(reply.status, _json(raw))

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self.timeout)
        connection.response_class = _Response
        return connection

    def model_status(self, name: str) -> LiveModel:
        return self._status(name, self.request("GET", _status_path(name)))

    def label_version(self, name: str, label: str) -> int | None:
        return _label_version(self.request("GET", _label_path(name, label)))

    def read_models(
        self, work: Sequence[tuple[str, Sequence[str]]], cancelled: Callable[[], bool] | None = None
    ) -> list[LiveModel]:
        """Each model's status and, when one of its versions is AVAILABLE, where each of its
        labels resolves (`work`: names and their labels), LIVE_READERS requests in flight.
        TfsUnreachable on the first that fails; Cancelled once `cancelled()` is true."""
        if self._https:
            return each_in_threads(
                work,
                lambda item: read_one_model(self, *item),
                width=LIVE_READERS,
                cancelled=cancelled,
            )
        found: list[LiveModel | None] = [None] * len(work)
        resolved: list[list[tuple[str, int]]] = [[] for _ in work]
        # What each path answers: the models (their index in `work`) a status is for, or the
        # models and label a label's metadata is for (a model named twice is read for each).
        statuses: dict[str, list[int]] = {}
        asks: dict[str, list[tuple[int, str]]] = {}
        for index, (name, _) in enumerate(work):
            statuses.setdefault(self._prefix + _status_path(name), []).append(index)

        def on_answer(path: str, answer: Answer) -> list[str]:
            reply = Response(answer.status, _json(answer.body))
            if path in asks:
                version = _label_version(reply)
                for index, label in asks.pop(path):
                    if version is not None:
                        resolved[index].append((label, version))
                return []
            more = []
            for index in statuses.pop(path):
                name, labels = work[index]
                model = found[index] = self._status(name, reply)
                if not (model.found and model.available):
                    continue
                for label in sorted(set(labels)):
                    label_path = self._prefix + _label_path(name, label)
                    if label_path not in asks:
                        more.append(label_path)
                    asks.setdefault(label_path, []).append((index, label))
            return more

        try:
            get_many(
                self._host,
                self._port,
                list(statuses),
                on_answer,
                connections=LIVE_READERS,
                timeout=self.timeout,
                cancelled=cancelled,
            )
        except (OSError, BadAnswer) as error:
            raise TfsUnreachable(f"TFS at {self.url} did not answer: {error}") from None
        return [
            replace(cast("LiveModel", model), labels=tuple(sorted(labels)))
            for model, labels in zip(found, resolved, strict=True)
        ]

    def _status(self, name: str, reply: Response) -> LiveModel:
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

    def predict(
        self, name: str, body: Any, *, version: int | None = None, label: str | None = None
    ) -> Response:
        path = f"/v1/models/{quote(name, safe='')}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return self.request("POST", path + ":predict", body)


def _json(raw: bytes) -> Any:
    """The parsed JSON body, or its text when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")


def _status_path(name: str) -> str:
    return f"/v1/models/{quote(name, safe='')}"


def _label_path(name: str, label: str) -> str:
    return f"/v1/models/{quote(name, safe='')}/labels/{quote(label, safe='')}/metadata"


def _label_version(reply: Response) -> int | None:
    """The version a label-metadata answer names, or None when the label resolves nowhere."""
    if reply.status != 200 or not isinstance(reply.body, dict):
        return None
    spec = reply.body.get("model_spec")
    version = spec.get("version") if isinstance(spec, dict) else None
    try:
        return int(version) if version not in (None, "") else None
    except (TypeError, ValueError):  # not a version number: the label resolves nowhere
        return None
