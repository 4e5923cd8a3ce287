"""A client connection of rmserve's gunicorn worker (rmserve.http.worker), and the request arriving on it."""

from __future__ import annotations

import contextlib
import socket
from enum import Enum, auto
from http import HTTPStatus
from typing import Any

import orjson
from gunicorn.workers.gthread import TConn

from rmserve.errors import ServiceError
from rmserve.http.framing import ChunkedBody, Head

PIECE_BYTES = 64 * 1024  # a received request is handed to gunicorn's parser this much at a time


class Phase(Enum):
    IDLE = auto()  # kept alive, waiting for the next request's first byte
    HEAD = auto()  # receiving a request's head
    BODY = auto()  # receiving its body
    SERVING = auto()  # a thread has the request
    CLOSING = auto()  # answered by the loop; what the client still sends is dropped until it closes


class ReceivedRequest:
    """A received request's bytes, handed to gunicorn's parser a piece at a time.

    gunicorn's in-memory reader copies what it holds on every read: given a large body whole, reading
    it 64 KiB at a time would copy the rest of it again on every read, quadratic in its size.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    def __iter__(self) -> ReceivedRequest:
        return self

    def __next__(self) -> bytes:
        if self.offset >= len(self.data):
            raise StopIteration
        piece = self.data[self.offset : self.offset + PIECE_BYTES]
        self.offset += len(piece)
        return piece

    def handed_over(self) -> bool:
        """Whether gunicorn took every byte (it reads to the end of the request it framed)."""
        return self.offset >= len(self.data)


class Connection(TConn):  # type: ignore[misc]  # gunicorn is untyped
    """A client connection and the request arriving on it."""

    parser: Any  # gunicorn's RequestParser of the request a thread has, once received (gunicorn is untyped)

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, deadline: float):
        super().__init__(cfg, sock, client, server)
        self.initialized = True  # plain HTTP/1.1, parsed from memory: gunicorn never reads this socket
        self.received = bytearray()
        self.searched = 0  # bytes of `received` looked through for the end of the head
        self.phase = Phase.HEAD
        self.deadline = deadline
        self.head: Head | None = None
        self.request = ReceivedRequest(b"")  # the one a thread has
        self.chunks: ChunkedBody | None = None
        self.charged = 0  # body bytes counted against the worker's budget
        self.whole = True  # the request a thread has arrived whole (if not, the connection closes after it)

    def send(self, data: bytes) -> None:
        """A few hundred bytes, without blocking: a fresh socket's buffer takes them, or the client is gone."""
        with contextlib.suppress(OSError):  # the client left; reading says so next
            self.sock.send(data)

    def send_error(self, error: ServiceError) -> None:
        """The error body every route answers with, from the event loop, before the request reaches a route."""
        body = orjson.dumps(error.document())
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close"}
        head = f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in {**headers, **error.headers}.items()
        )
        self.send(head.encode("latin-1") + b"\r\n" + body)
