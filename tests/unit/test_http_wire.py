"""HTTP/1.1 answers read from bytes as they arrive (the bulk live read's parser)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.http_wire import MAX_HEADER_BYTES, Answer, BadAnswer, read_answer

BODY = b'{"model_spec": {"version": "4"}}'
PLAIN = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\n"
    + BODY[:5]
    + b"\r\n%x\r\n" % (len(BODY) - 5)
    + BODY[5:]
    + b"\r\n0\r\nX-T: 1\r\n\r\n"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n" + PLAIN
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
OLD = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
OLD_KEPT = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n{}"
BARE = b"HTTP/1.1 200 OK\nX-Folded: a\n b\ncontent-length: 2\n\n{}"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"

STREAM = [PLAIN, CHUNKED, CONTINUE, BARE, NO_CONTENT, OLD_KEPT]
EXPECTED = [
    Answer(200, BODY, True),
    Answer(200, BODY, True),
    Answer(200, BODY, True),
    Answer(200, b"{}", True),
    Answer(204, b"", True),
    Answer(200, b"{}", True),
]


def _read_all(pieces: list[bytes]) -> list[Answer]:
    """Feed `pieces` one at a time, as recv would hand them over."""
    buffer, answers = bytearray(), []
    for piece in pieces:
        buffer += piece
        while (found := read_answer(buffer, eof=False)) is not None:
            answer, used = found
            answers.append(answer)
            del buffer[:used]
    assert not buffer
    return answers


def test_answers_in_every_shape() -> None:
    assert _read_all(STREAM) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=sum(map(len, STREAM))), max_size=30))
def test_answers_read_the_same_however_the_bytes_are_split(cuts: list[int]) -> None:
    data = b"".join(STREAM)
    edges = [0, *sorted(cuts), len(data)]
    assert _read_all([data[a:b] for a, b in itertools.pairwise(edges)]) == EXPECTED


@pytest.mark.parametrize(
    ("data", "keep_alive"),
    [(NOT_FOUND, False), (OLD, False), (OLD_KEPT, True), (PLAIN, True)],
)
def test_whether_the_connection_stays_open(data: bytes, keep_alive: bool) -> None:
    found = read_answer(data, eof=False)
    assert found is not None and found[0].keep_alive is keep_alive


def test_a_body_without_a_length_runs_until_the_server_closes() -> None:
    data = b"HTTP/1.1 200 OK\r\n\r\n{}"
    assert read_answer(data, eof=False) is None
    assert read_answer(data, eof=True) == (Answer(200, b"{}", False), len(data))


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEADER_BYTES,
        # limits a server cannot get round: 1xx answers and trailers sent on and on
        b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_HEADER_BYTES // 20),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        + b"X: y\r\n" * (MAX_HEADER_BYTES // 5),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"a" * MAX_HEADER_BYTES,
    ],
)
def test_what_is_not_an_answer_is_refused(data: bytes) -> None:
    with pytest.raises(BadAnswer):
        read_answer(data, eof=False)


@pytest.mark.parametrize("data", [PLAIN[:10], PLAIN[:-3], CHUNKED[:-2]])
def test_an_answer_cut_short_by_the_server_closing_is_refused(data: bytes) -> None:
    assert read_answer(data, eof=False) is None
    with pytest.raises(BadAnswer):
        read_answer(data, eof=True)


@given(st.binary(max_size=300))
def test_any_bytes_give_an_answer_more_to_wait_for_or_bad_answer(data: bytes) -> None:
    for eof in (False, True):
        try:
            found = read_answer(data, eof=eof)
        except BadAnswer:
            continue
        if found is not None:
            assert 0 < found[1] <= len(data)
