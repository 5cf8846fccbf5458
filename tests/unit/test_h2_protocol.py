"""HTTP/2 fixes carried for h2 and hypercorn (frontend/h2_protocol.py): the graceful GOAWAY state machine."""
import h2.events
import pytest
from h2.connection import ConnectionInputs as I, ConnectionState as S
from h2.exceptions import ProtocolError

from finops.frontend.h2_protocol import GracefulConnectionStateMachine


def machine(state=S.SERVER_OPEN):
    m = GracefulConnectionStateMachine()
    m.state = state
    return m


def test_a_received_goaway_leaves_open_streams_able_to_send():
    m = machine()
    m.process_input(I.RECV_GOAWAY)
    assert m.state is S.SERVER_OPEN and m.goaway_received
    for inp in (I.SEND_HEADERS, I.SEND_DATA, I.RECV_WINDOW_UPDATE, I.SEND_RST_STREAM):
        m.process_input(inp)
    assert m.state is S.SERVER_OPEN


def test_our_own_goaway_still_closes():
    m = machine()
    m.process_input(I.SEND_GOAWAY)
    assert m.state is S.CLOSED
    with pytest.raises(ProtocolError):
        m.process_input(I.SEND_DATA)


def test_stock_h2_closes_on_a_received_goaway():
    """What the fix is for (python-hyper/h2 #1181): without it, sending DATA after the peer's
    GOAWAY is a protocol error."""
    stock = GracefulConnectionStateMachine.__mro__[1]()      # h2's own class
    stock.state = S.SERVER_OPEN
    stock.process_input(I.RECV_GOAWAY)
    with pytest.raises(ProtocolError):
        stock.process_input(I.SEND_DATA)


def protocol(sent: list):
    """A FinOpsH2Protocol with nothing behind it: what it sends to its TCP server lands in `sent`."""
    from hypercorn.config import Config
    from hypercorn.trio.worker_context import WorkerContext

    from finops.frontend.h2_protocol import FinOpsH2Protocol

    async def send(event):
        sent.append(event)
    return FinOpsH2Protocol(None, Config(), WorkerContext(None), None, None, False, None, None, send)


async def test_a_goaway_while_a_finished_streams_end_is_still_unwritten_waits_for_it():
    """The application has finished (the stream left hypercorn's table) but the sending task has
    not yet written END_STREAM: a GOAWAY then closed the connection under that write (the client
    lost the stream's end; the frontend met trio's BusyResourceError)."""
    from hypercorn.events import Closed
    sent: list = []
    p = protocol(sent)
    p.stream_buffers[1] = object()          # the stream's last bytes are still to go
    await p._handle_events([h2.events.ConnectionTerminated()])
    assert not any(isinstance(e, Closed) for e in sent) and p.going_away
    del p.stream_buffers[1]                 # what the sending task does once they went out
    await p._close_if_done()
    assert isinstance(sent[-1], Closed)


async def test_a_goaway_with_nothing_left_to_send_closes_at_once():
    from hypercorn.events import Closed
    sent: list = []
    await protocol(sent)._handle_events([h2.events.ConnectionTerminated()])
    assert any(isinstance(e, Closed) for e in sent)


async def test_request_data_for_a_stream_no_longer_served_is_acknowledged_and_dropped():
    """A client still sending a body when its stream was answered and left the table: hypercorn
    raised KeyError out of the connection; the data is now dropped and the connection's flow-control
    window given back (else enough such data would stall every other stream)."""
    import h2.config
    import h2.connection
    from hypercorn.events import RawData
    sent: list = []
    p = protocol(sent)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "t")])
    p.connection.initiate_connection()
    client.receive_data(p.connection.data_to_send())
    p.connection.receive_data(client.data_to_send())    # the request: answered and gone (not in p.streams)
    for _ in range(3):
        client.send_data(1, b"x" * 13_000)
    late = p.connection.receive_data(client.data_to_send())
    assert [type(e) for e in late] == [h2.events.DataReceived] * 3
    await p._handle_events(late)            # hypercorn: KeyError
    updates = [e for raw in sent if isinstance(raw, RawData) for e in client.receive_data(raw.data)
               if isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0]
    assert sum(e.delta for e in updates) == 39_000
