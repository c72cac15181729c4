"""HTTP/1.1 answers read from bytes as they arrive: the status, the body, and whether the
connection stays open (RFC 9112: Content-Length, chunked, or until the server closes)."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEADER_BYTES = 65536
MAX_BODY_BYTES = 64 * 1024 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\r\n]*)?\r?\n")


class BadAnswer(Exception):
    """What the server sent is not an HTTP/1.x answer this client reads."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    keep_alive: bool  # the connection may carry the next request


@dataclass(frozen=True)
class _Head:
    status: int
    size: int  # its length in bytes, the blank line included
    length: int | None  # Content-Length
    chunked: bool
    keep_alive: bool


def _head(data: bytes | bytearray) -> _Head | None:
    end = data.find(b"\n\r\n")
    bare = data.find(b"\n\n")
    ends = [e for e in (end + 3 if end >= 0 else -1, bare + 2 if bare >= 0 else -1) if e >= 0]
    if not ends:
        if len(data) > MAX_HEADER_BYTES:
            raise BadAnswer(f"a header block longer than {MAX_HEADER_BYTES} bytes")
        return None
    size = min(ends)
    if size > MAX_HEADER_BYTES:
        raise BadAnswer(f"a header block longer than {MAX_HEADER_BYTES} bytes")
    first = _STATUS_LINE.match(data)
    if first is None:
        raise BadAnswer(f"not an HTTP/1.x status line: {bytes(data[:40])!r}")
    minor, status = first.group(1), int(first.group(2))
    length: int | None = None
    chunked, connection = False, b""
    lines: list[bytes] = []
    for line in bytes(data[first.end() : size]).splitlines():
        if line[:1] in (b" ", b"\t") and lines:  # obs-fold: one value over two lines
            lines[-1] += b" " + line.strip()
        elif line:
            lines.append(line)
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise BadAnswer(f"not a header line: {line[:40]!r}")
        name, value = name.lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise BadAnswer(f"a bad Content-Length: {value[:40]!r}")
            length = int(value)
        elif name == b"transfer-encoding":
            codings = [c.strip() for c in value.lower().split(b",")]
            if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
                raise BadAnswer(f"a transfer coding this client does not read: {value[:40]!r}")
            chunked = True
        elif name == b"connection":
            connection = value.lower()
    if length is not None and length > MAX_BODY_BYTES:
        raise BadAnswer(f"a body of {length} bytes, over {MAX_BODY_BYTES}")
    tokens = {t.strip() for t in connection.split(b",")}
    keep_alive = b"close" not in tokens and (minor == b"1" or b"keep-alive" in tokens)
    if chunked:
        length = None  # RFC 9112 6.3: Transfer-Encoding overrides Content-Length
    return _Head(status, size, length, chunked, keep_alive)


def _chunks(data: bytes | bytearray, start: int) -> tuple[bytes, int] | None:
    """The body of a chunked answer that begins at `start`, and where the answer ends."""
    parts: list[bytes] = []
    at, total = start, 0
    while True:
        size_line = _CHUNK_SIZE.match(data, at)
        if size_line is None:
            newline = data.find(b"\n", at)
            if newline >= 0 or len(data) - at > 1024:
                raise BadAnswer("a bad chunk size line")
            return None
        size, at = int(size_line.group(1), 16), size_line.end()
        total += size
        if total > MAX_BODY_BYTES:
            raise BadAnswer(f"a body over {MAX_BODY_BYTES} bytes")
        if size == 0:
            trailer = at
            while True:  # trailer lines, up to the blank one: a header block's limit
                newline = data.find(b"\n", at)
                if (newline if newline >= 0 else len(data)) - trailer > MAX_HEADER_BYTES:
                    raise BadAnswer(f"trailer lines longer than {MAX_HEADER_BYTES} bytes")
                if newline < 0:
                    return None
                line, at = data[at : newline + 1], newline + 1
                if line in (b"\r\n", b"\n"):
                    return b"".join(parts), at
        if len(data) < at + size + 1:
            return None
        parts.append(bytes(data[at : at + size]))
        at += size
        if data[at : at + 2] == b"\r\n":
            at += 2
        elif data[at : at + 1] == b"\n":
            at += 1
        elif len(data) >= at + 2:
            raise BadAnswer("a chunk not followed by a line end")
        else:
            return None


def read_answer(data: bytes | bytearray, *, eof: bool) -> tuple[Answer, int] | None:
    """The first answer in `data` and the number of bytes it took, or None while more bytes
    are needed (`eof`: the server has closed, nothing more will come). Informational (1xx)
    answers before it are skipped."""
    start = 0
    while True:
        head = _head(data[start:] if start else data)
        if head is None:
            if eof:
                raise BadAnswer("the connection closed before a whole header block")
            return None
        if 100 <= head.status < 200 and head.status != 101:
            start += head.size
            if start > MAX_HEADER_BYTES:  # 1xx answers sent on and on: no final one
                raise BadAnswer(f"informational answers longer than {MAX_HEADER_BYTES} bytes")
            continue
        break
    body_at = start + head.size
    no_body = head.status in (204, 304)
    if no_body or (head.length is not None):
        length = 0 if no_body else head.length or 0
        if len(data) < body_at + length:
            if eof:
                raise BadAnswer("the connection closed before the whole body")
            return None
        body = bytes(data[body_at : body_at + length])
        return Answer(head.status, body, head.keep_alive), body_at + length
    if head.chunked:
        found = _chunks(data, body_at)
        if found is None:
            if eof:
                raise BadAnswer("the connection closed before the last chunk")
            return None
        body, end = found
        return Answer(head.status, body, head.keep_alive), end
    if not eof:  # the body runs until the server closes
        if len(data) - body_at > MAX_BODY_BYTES:
            raise BadAnswer(f"a body over {MAX_BODY_BYTES} bytes")
        return None
    return Answer(head.status, bytes(data[body_at:]), False), len(data)
