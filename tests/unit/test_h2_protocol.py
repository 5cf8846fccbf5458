"""HTTP/2 fixes carried for h2 and hypercorn (frontend/h2_protocol.py): the graceful GOAWAY state machine."""
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
