"""Slow clients for the live-server tests: connections that send a request a few bytes at a time.

Each keeps sending the next piece of its request every `interval_s`, forever; when the server
closes the connection (408, or just closed), it counts the cut and connects again, so the pressure
lasts as long as the test wants it.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

HOST = "127.0.0.1"
SCORING_HEAD = b"POST /v1/score HTTP/1.1\r\nHost: rmserve\r\nContent-Type: application/json\r\n"


def trickled_headers(index: int) -> Iterator[bytes]:
    """A head that never ends: the request line, then one header line a piece."""
    yield b"POST /v1/score HTTP/1.1\r\n"
    for line in itertools.count():
        yield b"X-Slow-%d: %d\r\n" % (index, line)


def trickled_body(index: int) -> Iterator[bytes]:
    """Whole headers declaring a large body, then one byte of it a piece."""
    yield SCORING_HEAD + b"Content-Length: 100000\r\n\r\n"
    while True:
        yield b" "


@dataclass
class _Trickler:
    index: int
    pieces: Iterator[bytes]
    sock: socket.socket
    due: float


@dataclass
class SlowClients:
    """`clients` connections to `port`, each sending a piece of `request(index)` every `interval_s` until `stop()`."""

    port: int
    clients: int
    request: Callable[[int], Iterator[bytes]]
    interval_s: float = 4.0
    connections: int = 0  # opened, reconnections included
    cut: int = 0  # closed by the server
    answers: dict[int, int] = field(default_factory=dict)  # status of what the server said before closing -> count

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tricklers: list[_Trickler] = []

    def start(self) -> SlowClients:
        started = time.monotonic()
        for index in range(self.clients):  # spread over one interval, as independent clients would be
            self._tricklers.append(self._connect(index, started + self.interval_s * index / self.clients))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(30)
        for trickler in self._tricklers:
            trickler.sock.close()

    def _connect(self, index: int, due: float) -> _Trickler:
        self.connections += 1
        sock = socket.create_connection((HOST, self.port), timeout=10)
        return _Trickler(index, self.request(index), sock, due)

    def _run(self) -> None:
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            for position, trickler in enumerate(self._tricklers):
                if trickler.due > now:
                    continue
                if self._closed_by_server(trickler.sock):
                    trickler.sock.close()
                    trickler = self._tricklers[position] = self._connect(trickler.index, now)
                with contextlib.suppress(OSError):  # closed between the check and the send: next turn reconnects
                    trickler.sock.sendall(next(trickler.pieces))
                trickler.due = now + self.interval_s

    def _closed_by_server(self, sock: socket.socket) -> bool:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            said = sock.recv(65536)
        except OSError:
            said = b""
        self.cut += 1
        if said.startswith(b"HTTP/1.1 "):
            status = int(said[9:12])
            self.answers[status] = self.answers.get(status, 0) + 1
        return True
