"""Where an HTTP/1.1 request ends, found as its bytes arrive (rmserve.http.worker receives requests whole).

The head is read here only as far as the body's framing needs (RFC 9112 section 6), as strictly as
gunicorn reads it; a chunked body's chunks are followed only to find their end. gunicorn's own parser
then reads the whole request in a thread: anything malformed is handed to it as it is, and it answers
the error; a request it frames differently closes the connection (rmserve.http.worker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEAD_END = b"\r\n\r\n"
CRLF = b"\r\n"
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
DIGITS = re.compile(rb"[0-9]+")
# Longest head (request line and headers) or trailer section received: real clients send a few hundred bytes,
# nginx refuses past 32 KiB, and a connection's buffer must stay small while it waits.
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 8192  # a chunk size with its extensions (gunicorn's own bound is 8190)


@dataclass(frozen=True)
class Head:
    """A request's head, received: where it ends and how its body is framed."""

    end: int  # offset of the body's first byte
    length: int | None  # the declared body length (0 without a body); None: chunked
    expects_continue: bool  # `Expect: 100-continue`: the client waits for a go-ahead before its body
    malformed: bool = False  # gunicorn refuses it: hand it over as it is


def parse_head(received: bytes | bytearray, searched: int = 0) -> Head | None:
    """The head at the start of `received` once its blank line has arrived (None before).

    `searched`: how many bytes an earlier call looked through (a trickled head is not scanned again and again).
    """
    blank_line = received.find(HEAD_END, max(0, searched - len(HEAD_END) + 1))
    if blank_line < 0:
        return None
    end = blank_line + len(HEAD_END)
    lines = bytes(received[:blank_line]).removeprefix(CRLF).split(CRLF)  # one empty line may come first
    http_1_1 = lines[0].endswith(b" HTTP/1.1")
    lengths, codings, expects_continue = [], [], False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or name != name.strip(b" \t") or not name:  # folded or broken lines: gunicorn refuses them
            return Head(end, 0, expects_continue=False, malformed=True)
        name, value = name.lower(), value.strip(b" \t")
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            codings += [coding.strip(b" \t").lower() for coding in value.split(b",")]
        elif name == b"expect":
            expects_continue = http_1_1 and value.lower() == b"100-continue"
    if codings:  # chunked, last, once, in HTTP/1.1, with no Content-Length; or refused (smuggling)
        chunked_only_last = codings[-1] == b"chunked" and codings.count(b"chunked") == 1
        if not (chunked_only_last and http_1_1 and not lengths):
            return Head(end, 0, expects_continue=False, malformed=True)
        return Head(end, None, expects_continue)
    if len(lengths) > 1 or (lengths and not DIGITS.fullmatch(lengths[0])):
        return Head(end, 0, expects_continue=False, malformed=True)
    return Head(end, int(lengths[0]) if lengths else 0, expects_continue)


class ChunkedBody:
    """Follows a chunked body as it arrives: its data bytes so far, and the offset just past its end."""

    def __init__(self, start: int):
        self.position = start  # the next byte not yet followed
        self.data_bytes = 0
        self.end: int | None = None
        self.malformed = False
        self._chunk_left = 0  # data bytes of the current chunk still to come
        self._searched = start  # how far a line's end was looked for (a trickled line is not scanned again)
        self._step = self._size_line

    def follow(self, received: bytes | bytearray) -> None:
        """Advance over what has arrived; stops at the end of the body, or where its framing breaks."""
        while self.end is None and not self.malformed and self._step(received):
            pass

    def _size_line(self, received: bytes | bytearray) -> bool:
        line_end = self._find(received, CRLF)
        if line_end < 0:
            self.malformed = len(received) - self.position > MAX_CHUNK_LINE
            return False
        size = bytes(received[self.position : line_end]).split(b";", 1)[0].rstrip(b" \t")
        if not CHUNK_SIZE.fullmatch(size):
            self.malformed = True
            return False
        self.position = line_end + len(CRLF)
        self._chunk_left = int(size, 16)
        self._step = self._data if self._chunk_left else self._trailers
        return True

    def _data(self, received: bytes | bytearray) -> bool:
        taken = min(self._chunk_left, len(received) - self.position)
        self.position += taken
        self.data_bytes += taken
        self._chunk_left -= taken
        if self._chunk_left:
            return False
        self._step = self._data_end
        return True

    def _data_end(self, received: bytes | bytearray) -> bool:
        if len(received) - self.position < len(CRLF):
            return False
        if received[self.position : self.position + len(CRLF)] != CRLF:
            self.malformed = True
            return False
        self.position += len(CRLF)
        self._step = self._size_line
        return True

    def _trailers(self, received: bytes | bytearray) -> bool:
        if len(received) - self.position < len(CRLF):
            return False
        if received[self.position : self.position + len(CRLF)] == CRLF:  # no trailers
            self.end = self.position + len(CRLF)
            return False
        trailers_end = self._find(received, HEAD_END)
        if trailers_end < 0:
            self.malformed = len(received) - self.position > MAX_HEAD_BYTES
            return False
        self.end = trailers_end + len(HEAD_END)
        return False

    def _find(self, received: bytes | bytearray, terminator: bytes) -> int:
        """Where `terminator` starts after `position`, looking only at what earlier calls did not; -1 if nowhere."""
        found = received.find(terminator, max(self.position, self._searched - len(terminator) + 1))
        self._searched = 0 if found >= 0 else len(received)  # found: the next search starts past it anyway
        return found
