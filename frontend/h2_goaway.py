"""HTTP/2 graceful GOAWAY: streams already open finish after the client sends GOAWAY.

The AWS SDK for JavaScript v3 (`NodeHttp2Handler`, the default for Bedrock Runtime) opens one
HTTP/2 connection per request and sends GOAWAY as soon as the response headers arrive. RFC 9113
section 6.8 says streams up to the GOAWAY's last-stream-id may still complete; two layers of our
server stack got that wrong (bedrock-protocol.md section 5), so every stream was cut after its
first DATA frame:

1. h2 4.x moves the connection state machine to CLOSED as soon as it *receives* a GOAWAY, and
   then refuses to send DATA on open streams (python-hyper/h2 issue #1181).
   `GracefulConnectionStateMachine` keeps the connection open when the peer's GOAWAY arrives
   (the peer promised not to open new streams; we never open any: no server push), so open
   streams can still send. Sending our own GOAWAY still closes it, as before.
2. hypercorn 0.18 closes the TCP connection on h2's `ConnectionTerminated` event.
   `GracefulH2Protocol` closes it only once no stream is left open; until then the event just
   marks the connection as going away.

`install()` puts both in place (the h2 module's state machine class, hypercorn's protocol
class). Both are small, carried here with their own tests (tests/system/test_http2.py drives the
server with an h2 client that sends GOAWAY exactly as the JS SDK does), and are meant for
upstream: the fix belongs in h2 (#1181) and hypercorn's H2Protocol.
"""
from __future__ import annotations

import h2.connection
import h2.events
import hypercorn.protocol
from hypercorn.events import Closed
from hypercorn.protocol.h2 import H2Protocol

_OPEN = (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN)


class GracefulConnectionStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a *received* GOAWAY leaves the connection
    open for the streams that already exist."""

    goaway_received = False

    def process_input(self, input_):
        if input_ is h2.connection.ConnectionInputs.RECV_GOAWAY and self.state in _OPEN:
            self.goaway_received = True
            return []
        return super().process_input(input_)


class GracefulH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol, except that the peer's GOAWAY closes the connection only
    when its open streams have finished."""

    going_away = False

    async def _handle_events(self, events):
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in events) and self.streams:
            self.going_away = True
            events = [e for e in events if not isinstance(e, h2.events.ConnectionTerminated)]
        await super()._handle_events(events)

    async def _close_stream(self, stream_id: int) -> None:
        await super()._close_stream(stream_id)
        await self._close_if_done()

    async def _send_data(self, stream_id: int) -> None:
        await super()._send_data(stream_id)
        await self._close_if_done()

    async def _close_if_done(self) -> None:
        """Close once every stream has ended and its last bytes (END_STREAM included) went out."""
        if self.going_away and not self.streams and not self.stream_buffers and not self.closed:
            await self._flush()
            await self.send(Closed())


def install() -> None:
    """Use the graceful classes for every connection this process serves. Idempotent."""
    h2.connection.H2ConnectionStateMachine = GracefulConnectionStateMachine
    hypercorn.protocol.H2Protocol = GracefulH2Protocol
