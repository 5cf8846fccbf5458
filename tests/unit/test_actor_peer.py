"""actors.Peer: a blocking actor's socket to another actor follows that actor's restarts."""
from __future__ import annotations

import msgpack

from finops.shared import actors, transport
from finops.shared.transport import zmq


def test_a_peer_reaches_the_announced_actor_and_follows_its_restart(tmp_path):
    run = str(tmp_path)
    peer = actors.Peer(run, "observer")
    assert peer.socket() is None                         # nothing announced yet
    received = []
    for generation in range(2):                           # the observer, then its replacement
        pull = transport.make_socket(zmq.PULL)
        endpoint = transport.bind(pull, transport.endpoint_for(f"observer-g{generation}", run, "ipc"))
        path = transport.announce(run, "observer", endpoint)
        sock = peer.socket()
        assert sock is not None and peer.endpoint == endpoint
        sock.send(actors.pack({"generation": generation}))
        assert pull.poll(5000)
        received.append(msgpack.unpackb(pull.recv(), raw=False)["generation"])
        pull.close(linger=0)
        transport.withdraw(path)
    assert received == [0, 1]
    assert peer.socket() is None                         # withdrawn: no actor to send to
    peer.close()
    assert peer.sock is None
