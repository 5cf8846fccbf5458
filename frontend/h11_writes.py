"""One write per answer of known length, in hypercorn's HTTP/1.1 protocol.

Hypercorn writes each h11 event on its own: the response head, then the body, then the end of the
message (empty for a Content-Length body). Each is a `TCPServer.protocol_send` (a lock, a shielded
cancel scope, a `send`), and with TCP_NODELAY the head and the body leave as two packets, so the
client wakes twice for one answer.

`install()` changes `H11Protocol._send_h11_event` so that a final response head that declares a
Content-Length is held and written together with what follows it (the body, or the end of the
message when there is no body), and nothing is written for an event that encodes to no bytes.
Streamed answers (chunked: every event stream) are written as before, head first: the client
sees the head as soon as the gateway sends it. The bytes on the wire are the same, in the same
order; only how many writes carry them changes.
"""
from __future__ import annotations

import h11
from hypercorn.events import RawData
from hypercorn.protocol import h11 as hypercorn_h11


def _declares_length(event) -> bool:
    return isinstance(event, h11.Response) and any(name == b"content-length" for name, _ in event.headers)


async def _send_h11_event(self, event) -> None:
    """hypercorn's H11Protocol._send_h11_event, writing a Content-Length head with what follows."""
    try:
        data = self.connection.send(event)
    except h11.LocalProtocolError:
        if self.connection.their_state != h11.ERROR:
            raise
        return
    held = self.__dict__.pop("_finops_head", None)
    if held is not None:
        data = held + data
    elif _declares_length(event):
        self._finops_head = data
        return
    if data:
        await self.send(RawData(data=data))


def install() -> None:
    """Make hypercorn's HTTP/1.1 protocol write a Content-Length answer in one go (idempotent)."""
    hypercorn_h11.H11Protocol._send_h11_event = _send_h11_event
