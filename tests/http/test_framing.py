"""Where a request ends (rmserve.http.framing), however its bytes are split as they arrive."""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http.body import LengthReader
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader

from rmserve.http.framing import MAX_CHUNK_LINE, ChunkedBody, Head, parse_head

NEXT = b"GET /healthz HTTP/1.1\r\n\r\n"  # a pipelined request behind the body


def arriving(data: bytes, step: int) -> list[bytes]:
    """What has arrived after each piece of `step` bytes (the whole of it last)."""
    return [data[:end] for end in range(step, len(data), step)] + [data]


def followed(body: bytes, step: int) -> ChunkedBody:
    chunks = ChunkedBody(0)
    for received in arriving(body, step):
        chunks.follow(received)
    return chunks


@pytest.mark.parametrize(
    ("head", "length", "expects_continue", "malformed"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n", 0, False, False),
        (b"POST /v1/score HTTP/1.1\r\nContent-Length: 12\r\n\r\n", 12, False, False),
        (b"POST /v1/score HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None, False, False),
        (b"POST /v1/score HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", 5, True, False),
        # Both lengths: gunicorn refuses it (request smuggling), so the head goes to it as it is.
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0, False, True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, False, True),
        (b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 0, False, True),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, False, True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0, False, True),
        (b"POST / HTTP/1.1\r\nX-Folded: a\r\n  b\r\nContent-Length: 5\r\n\r\n", 0, False, True),
        (b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", 0, False, True),
    ],
)
def test_a_head_is_framed_as_strictly_as_gunicorn_reads_it(
    head: bytes, length: int | None, expects_continue: bool, malformed: bool
) -> None:
    assert parse_head(head + b"body bytes") == Head(len(head), length, expects_continue, malformed)
    assert gunicorn_framing(head) == ("refused" if malformed else length)  # the loop and gunicorn agree


def gunicorn_framing(head: bytes) -> int | str | None:
    """The body length gunicorn's parser reads from `head` (None: chunked), or "refused"."""
    try:
        request = Request(Config(), IterUnreader([head]), ("127.0.0.1", 40000))
    except Exception:
        return "refused"
    assert request.body is not None  # a parsed request has one, if empty
    reader = request.body.reader
    return reader.length if isinstance(reader, LengthReader) else None


def test_a_head_is_found_however_it_trickles_in() -> None:
    head = b"POST /v1/score HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"
    searched, found = 0, None
    for received in arriving(head + b"abc", 1):
        found = found or parse_head(received, searched)
        searched = len(received)
    assert found == Head(len(head), 3, expects_continue=False)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_a_chunked_body_ends_where_its_last_chunk_and_trailers_do(step: int) -> None:
    for body, data_bytes in [
        (b"5\r\nhello\r\n0\r\n\r\n", 5),
        (b"5;name=value\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n", 15),
        (b"0\r\n\r\n", 0),
    ]:
        chunks = followed(body + NEXT, step)
        assert (chunks.end, chunks.data_bytes, chunks.malformed) == (len(body), data_bytes, False)


def test_the_data_of_an_unfinished_chunked_body_is_counted_as_it_arrives() -> None:
    chunks = followed(b"a\r\n01234", 1)
    assert (chunks.end, chunks.data_bytes, chunks.malformed) == (None, 5, False)


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nhello\r\n", b"0x5\r\nhello\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5" * (MAX_CHUNK_LINE + 1)],
    ids=["not-hex", "prefixed", "no-crlf-after-data", "endless-size-line"],
)
def test_broken_chunk_framing_is_left_for_gunicorn_to_refuse(body: bytes) -> None:
    chunks = followed(body, 1)
    assert chunks.malformed and chunks.end is None
