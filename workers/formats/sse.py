"""A text/event-stream decoder (the WHATWG "server-sent events" parsing rules). Pure.

    decoder = SSEDecoder()
    for event, data in decoder.feed(chunk_bytes):   # any split of the byte stream
        ...                                         # event: the `event:` field or None; data: str

Lines end in LF, CRLF or CR. `data:` lines of one event are joined with "\\n"; a line starting
with ":" is a comment (keep-alives); `id:` and `retry:` are ignored. An event is dispatched at
the blank line that ends it; an event without data is dropped, and so is an unfinished event at
the end of the body (the spec says so: the caller learns the stream was cut from the provider's
own end marker, which never arrived). A UTF-8 BOM at the start is skipped.
"""
from __future__ import annotations

MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream is not text/event-stream (not UTF-8, or an event beyond the size limit)."""


class SSEDecoder:
    __slots__ = ("_buf", "_event", "_data", "_started", "_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._started = False
        self._cr = False            # the last chunk ended in CR: a following LF belongs to it

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if not self._started:
            chunk = self._buf + chunk
            self._buf = b""
            if len(chunk) < 3 and b"\xef\xbb\xbf".startswith(chunk):
                self._buf = chunk
                return []
            if chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            self._started = True
            buf = chunk
        else:
            buf = self._buf + chunk
        if self._cr and buf.startswith(b"\n"):
            buf = buf[1:]
        self._cr = False
        out: list[tuple[str | None, str]] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt] == 0x0A:
                    nxt += 1
                elif nxt == n:
                    self._cr = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(buf[start:end], out)
            start = nxt
        self._buf = buf[start:]
        if len(self._buf) > MAX_EVENT_BYTES:
            raise SSEError(f"an event line is longer than {MAX_EVENT_BYTES} bytes")
        return out

    def _line(self, raw: bytes, out: list) -> None:
        if not raw:
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SSEError(f"not UTF-8 text (byte {e.start} of a line)") from None
        if line[0] == ":":
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or None
