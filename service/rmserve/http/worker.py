"""The gunicorn worker `rmserve serve` runs: a request reaches a thread only once it has arrived whole.

gunicorn's gthread worker gives a connection a thread as soon as its first byte arrives, and the thread
waits for the rest: clients sending a header line or a body byte every few seconds hold every thread,
and probes find none. Here the event loop receives each request's head and body without a thread,
within RMSERVE_HEADER_TIMEOUT_S and RMSERVE_BODY_TIMEOUT_S (408 past them, like nginx's
client_header_timeout and client_body_timeout), charging body bytes against the worker's body budget
as they arrive (429 when they do not fit). A thread then parses the request from memory and runs the
app. Accepting, threads, keep-alive, pipelining and the SIGTERM drain stay gunicorn's.
"""

from __future__ import annotations

import errno
import socket
import time
from concurrent.futures import Future
from functools import partial
from selectors import EVENT_READ
from typing import Any

from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import ThreadWorker

from rmserve.config import Settings
from rmserve.errors import HeadersTooLarge, QueueFull, RequestTimeout, ServiceError
from rmserve.http.admission import Admission
from rmserve.http.connection import Connection, Phase, ReceivedRequest
from rmserve.http.framing import MAX_HEAD_BYTES, ChunkedBody, parse_head

HEAD_RECEIVE_BYTES = 64 * 1024  # per recv() of a head (and the small body that usually comes with it)
# Per recv() of a body: each wake-up of the loop may wait for the GIL, so a large body takes few of them.
BODY_RECEIVE_BYTES = 1024 * 1024
LINGER_S = 2.0  # after the loop's own answer, how long the rest of a request is read and dropped (RFC 9112 9.6)
CHECK_EVERY_S = 0.25  # how often deadlines are checked
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ReceivingWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gthread, with every request received by the event loop before a thread serves it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settings = Settings.from_env()
        self.watched: set[Connection] = set()  # registered with the poller: receiving, or closing
        self.next_check = 0.0

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.proxy_protocol != "off" or cfg.protocol != "http" or cfg.http2_cleartext != "off":
            raise RuntimeError(f"{cls.__name__} serves plain HTTP/1.1 only: terminate TLS and HTTP/2 in front of it")

    def run(self) -> None:
        # Imported after fork, as the app itself is: gunicorn's master imports this module, and must load
        # neither ONNX Runtime (its threads do not survive a fork) nor the metrics' multiprocess storage.
        from rmserve import metrics
        from rmserve.http.state import EXTENSION

        self.unfinished, self.failures = metrics.UNFINISHED_REQUESTS, metrics.FAILURES
        self.admission: Admission = self.wsgi.extensions[EXTENSION].admission
        self.admission.receive_bodies_in_server()
        super().run()

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # The first request's head is due within the header timeout of connecting (nginx's rule too).
        deadline = time.monotonic() + self.settings.header_timeout_s
        self.receive(Connection(self.cfg, sock, client, listener.getsockname(), deadline))

    def receive(self, conn: Connection) -> None:
        """Hand the next request on `conn` to a thread if it is here, or wait for the rest of it."""
        self.advance(conn)
        if conn.phase in (Phase.IDLE, Phase.HEAD, Phase.BODY):
            self.watch(conn)

    def on_readable(self, conn: Connection, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(BODY_RECEIVE_BYTES if conn.phase is Phase.BODY else HEAD_RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the client: as good as closed
            data = b""
        if conn.phase is Phase.CLOSING:
            if not data:
                self.close(conn)
            return
        if not data:
            if conn.received:
                self.unfinished.labels("client_closed").inc()
            self.close(conn)
            return
        conn.received += data
        self.advance(conn)

    def advance(self, conn: Connection) -> None:
        """Take in what has arrived: the head, then the body; dispatch the request once it is whole."""
        if conn.phase is Phase.IDLE and conn.received:
            conn.phase, conn.deadline = Phase.HEAD, time.monotonic() + self.settings.header_timeout_s
        if conn.phase is Phase.HEAD:
            self.advance_head(conn)
        if conn.phase is Phase.BODY:
            self.advance_body(conn)

    def advance_head(self, conn: Connection) -> None:
        head = parse_head(conn.received, conn.searched)
        conn.searched = len(conn.received)
        if head is None:
            if len(conn.received) > MAX_HEAD_BYTES:
                self.answer(conn, HeadersTooLarge(f"the request's head is over {MAX_HEAD_BYTES} bytes"))
            return
        if head.malformed:  # gunicorn's thread answers the error
            self.dispatch(conn, head.end, whole=False)
            return
        if head.length is not None and head.length > self.settings.max_body_bytes:
            self.dispatch(conn, head.end, whole=False)  # the app answers 413 from the declared length
            return
        # A declared length is reserved before the body is read: a refusal costs a 429 and nothing else.
        if head.length and not self.charge(conn, head.length):
            return
        conn.head, conn.chunks = head, ChunkedBody(head.end) if head.length is None else None
        conn.phase, conn.deadline = Phase.BODY, time.monotonic() + self.settings.body_timeout_s
        if head.expects_continue and head.length != 0 and len(conn.received) == head.end:
            conn.send(CONTINUE)

    def advance_body(self, conn: Connection) -> None:
        assert conn.head is not None
        if conn.chunks is None:
            end = conn.head.end + (conn.head.length or 0)
            if len(conn.received) >= end:
                self.dispatch(conn, end, whole=True)
            return
        chunks = conn.chunks
        chunks.follow(conn.received)
        arrived = (chunks.end or len(conn.received)) - conn.head.end  # a chunked body is charged as it arrives
        if not self.charge(conn, arrived - conn.charged):
            return
        if chunks.end is not None:
            self.dispatch(conn, chunks.end, whole=True)
        elif chunks.malformed or chunks.data_bytes > self.settings.max_body_bytes:
            # gunicorn refuses the framing; or the app reads one byte past the limit and answers 413
            self.dispatch(conn, len(conn.received), whole=False)

    def charge(self, conn: Connection, more_bytes: int) -> bool:
        """Count more body bytes of `conn`'s request, or answer 429 and say no."""
        try:
            self.admission.charge(more_bytes)
        except QueueFull as refusal:
            self.answer(conn, refusal)
            return False
        conn.charged += more_bytes
        return True

    def dispatch(self, conn: Connection, end: int, whole: bool) -> None:
        """Give the request in `received[:end]` to a thread, which parses it from memory."""
        self.unwatch(conn)
        with memoryview(conn.received) as received:
            conn.request = ReceivedRequest(bytes(received[:end]))
        del conn.received[:end]
        conn.searched = 0
        conn.parser = RequestParser(self.cfg, conn.request, conn.client)
        conn.phase, conn.whole = Phase.SERVING, whole
        self.enqueue_req(conn)

    def handle_request(self, req: Any, conn: Connection) -> bool:
        """Serve a received request (in a thread); whether its connection may carry another."""
        req._expected_100_continue = False  # the loop sent "100 Continue" already, or the body came without it
        if not conn.whole:
            req.force_close()  # the rest of its body was never read: the answer says `Connection: close`
        if not super().handle_request(req, conn):
            return False
        # What the app left unread is in memory: drop it all here, where gunicorn's own drain of the
        # socket gives up past 64 KiB and closes a connection the answer said would stay open.
        try:
            return bool(conn.parser.finish_body())
        except Exception:  # its chunks break after what the app read: the next request's start is unknown
            return False

    def finish_request(self, conn: Connection, fs: Future[Any]) -> None:
        """A thread answered: wait for the next request on the connection, or close it."""
        self.release(conn)
        try:
            keep_alive = fs.result() is True
        except BaseException:  # the thread died with the request (gunicorn logged it)
            keep_alive = False
        # Bytes gunicorn's parse left over mean it framed the request differently: trust nothing after it.
        framed_alike = not conn.parser.unreader.buf.getvalue() and conn.request.handed_over()
        conn.sock.setblocking(False)
        if not (keep_alive and conn.whole and framed_alike):
            self.linger(conn)
            return
        conn.parser, conn.head, conn.chunks = None, None, None
        conn.phase, conn.deadline = Phase.IDLE, time.monotonic() + self.cfg.keepalive
        self.receive(conn)

    def murder_pending(self) -> None:
        """Every CHECK_EVERY_S: close kept-alive connections idle too long, answer 408 to requests too slow."""
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + CHECK_EVERY_S
        for conn in [conn for conn in self.watched if conn.deadline <= now]:
            if conn.phase is Phase.HEAD and not conn.received:  # connected and never sent a byte
                self.unfinished.labels("header_timeout").inc()
                self.close(conn)
            elif conn.phase is Phase.HEAD:
                self.unfinished.labels("header_timeout").inc()
                self.answer(conn, RequestTimeout(self.too_slow("headers", self.settings.header_timeout_s)))
            elif conn.phase is Phase.BODY:
                self.unfinished.labels("body_timeout").inc()
                self.answer(conn, RequestTimeout(self.too_slow("body", self.settings.body_timeout_s)))
            else:  # kept alive and idle, or lingering after an answer
                self.close(conn)

    def _cap_keepalive(self, deadline: float) -> None:
        """Stopping: idle kept-alive connections close by `deadline`; requests under way are still received."""
        super()._cap_keepalive(deadline)  # pyright: ignore[reportAttributeAccessIssue]  # gunicorn 27's; typeshed's stubs are older
        for conn in self.watched:
            if conn.phase is Phase.IDLE:
                conn.deadline = min(conn.deadline, deadline)

    @staticmethod
    def too_slow(part: str, timeout_s: float) -> str:
        setting = "RMSERVE_HEADER_TIMEOUT_S" if part == "headers" else "RMSERVE_BODY_TIMEOUT_S"
        return f"the request's {part} did not arrive within {timeout_s:g} s ({setting})"

    def answer(self, conn: Connection, error: ServiceError) -> None:
        """Answer `error` from the loop (the request never reaches a route) and close the connection."""
        self.failures.labels(error.code).inc()
        conn.send_error(error)
        self.linger(conn)

    def linger(self, conn: Connection) -> None:
        """Close gracefully without blocking the loop: send FIN, drop what still arrives, close on EOF or LINGER_S."""
        self.release(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:  # already gone
            self.close(conn)
            return
        conn.phase, conn.deadline = Phase.CLOSING, time.monotonic() + LINGER_S
        self.watch(conn)

    def release(self, conn: Connection) -> None:
        self.admission.release(conn.charged)
        conn.charged = 0

    def close(self, conn: Connection) -> None:
        self.unwatch(conn)
        self.release(conn)
        self.nr_conns -= 1
        conn.close()

    def watch(self, conn: Connection) -> None:
        if conn not in self.watched:
            self.watched.add(conn)
            self.poller.register(conn.sock, EVENT_READ, partial(self.on_readable, conn))

    def unwatch(self, conn: Connection) -> None:
        if conn in self.watched:
            self.watched.remove(conn)
            self.poller.unregister(conn.sock)
