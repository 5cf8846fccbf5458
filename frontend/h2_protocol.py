"""Hypercorn's HTTP/2 server protocol, with the fixes we carry for it and for h2.

**Graceful GOAWAY: streams already open finish after the client sends GOAWAY.** The AWS SDK for
JavaScript v3 (`NodeHttp2Handler`, the default for Bedrock Runtime) opens one HTTP/2 connection
per request and sends GOAWAY as soon as the response headers arrive. RFC 9113 section 6.8 says
streams up to the GOAWAY's last-stream-id may still complete; two layers of our server stack got
that wrong (bedrock-protocol.md section 5), so every stream was cut after its first DATA frame:

1. h2 4.x moves the connection state machine to CLOSED as soon as it *receives* a GOAWAY, and
   then refuses to send DATA on open streams (python-hyper/h2 issue #1181).
   `GracefulConnectionStateMachine` keeps the connection open when the peer's GOAWAY arrives
   (the peer promised not to open new streams; we never open any: no server push), so open
   streams can still send. Sending our own GOAWAY still closes it, as before.
2. hypercorn 0.18 closes the TCP connection on h2's `ConnectionTerminated` event.
   `FinOpsH2Protocol` closes it only once no stream is left open and every stream's last bytes
   (END_STREAM included) went out; until then the event just marks the connection as going
   away. (A stream whose application has finished leaves hypercorn's stream table before its
   sending task has written its end; a GOAWAY landing in between closed the connection under
   that write.)

**Request data that arrives after the answer is dropped, not fatal.** A client may still be
sending a request body when the gateway has answered that stream (an error found before the
body ended; RFC 9113 section 8.1 allows it). Hypercorn looks the stream up in its table, which no
longer holds it, and raised `KeyError` out of the connection (hypercorn issue #365); under trio
that ended the whole frontend (connection_guard.py now contains such failures to one connection).
`FinOpsH2Protocol` acknowledges that data for flow control and drops it, as hypercorn already does
for a late end of stream.

`install()` puts both classes in place (the h2 module's state machine class, hypercorn's protocol
class). They are small, carried here with their own tests (tests/unit/test_h2_protocol.py;
tests/system/test_http2.py drives the server with an h2 client that sends GOAWAY exactly as the
JS SDK does, and data after the answer), and are meant for upstream: the fixes belong in h2
(#1181) and hypercorn's H2Protocol.
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


class FinOpsH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol, except that the peer's GOAWAY closes the connection only
    when its open streams have finished, and request data for a stream already answered is
    dropped."""

    going_away = False

    async def _handle_events(self, events):
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in events) and (self.streams or self.stream_buffers):
            self.going_away = True
            events = [e for e in events if not isinstance(e, h2.events.ConnectionTerminated)]
        if not any(isinstance(e, h2.events.DataReceived) for e in events):
            await super()._handle_events(events)
            return
        for event in events:    # one at a time: an earlier event may open or close a stream
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                await self._flush()
            else:
                await super()._handle_events([event])

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
    hypercorn.protocol.H2Protocol = FinOpsH2Protocol
