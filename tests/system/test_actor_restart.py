"""A message a process sends to an actor while that actor is dead reaches its replacement: the
sender keeps it until the replacement is there, it is never lost in a queue for the dead one.

This is what makes the README's "rows sent while [the observer] restarts wait in the frontends"
true, and what keeps a worker's settles when the ledger is killed (found by scripts/soak.py: before
the fix, ZeroMQ queued such messages for the dead actor's endpoint, reported them sent, and dropped
them when the sender switched to the replacement).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from finops.shared import actors, transport

# A stand-in actor: binds its PULL socket, announces it in the run directory as the observer,
# and appends the "n" of every message it receives to a file.
ACTOR = r"""
import sys, msgpack
from finops.shared import transport
from finops.shared.transport import zmq
run, out = sys.argv[1], sys.argv[2]
pull = transport.make_socket(zmq.PULL)
endpoint = transport.bind(pull, transport.endpoint_for("observer", run, "ipc"))
transport.announce(run, "observer", endpoint)
with open(out, "a") as f:
    while True:
        f.write(f"{msgpack.unpackb(pull.recv(), raw=False)['n']}\n")
        f.flush()
"""


def start_actor(run: str, out: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", ACTOR, run, out])
    deadline = time.monotonic() + 20
    while p.pid not in transport.discover(run, "observer"):
        assert p.poll() is None, "the stand-in actor exited"
        assert time.monotonic() < deadline, "the stand-in actor did not announce itself"
        time.sleep(0.01)
    return p


def received(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []


def wait_received(path: str, want: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while received(path) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return received(path)


def send_until_sent(client: actors.ActorClient, msg: dict, timeout: float = 10.0) -> None:
    """What every sender does (the frontend's rows, the ledger client's settles): keep the message
    and try again until the actor takes it."""
    deadline = time.monotonic() + timeout
    while not client.send(msg):
        assert time.monotonic() < deadline, f"{msg} never sent"
        time.sleep(0.01)


def test_messages_sent_while_an_actor_is_dead_reach_its_replacement(tmp_path):
    run, first_out, second_out = str(tmp_path / "run"), str(tmp_path / "first"), str(tmp_path / "second")
    os.makedirs(run)
    first = start_actor(run, first_out)
    second = None
    client = actors.ActorClient(run, "observer", replies=False)
    try:
        send_until_sent(client, {"n": 0})
        assert wait_received(first_out, [0]) == [0]

        first.send_signal(signal.SIGKILL)       # as `kill -9`, or the soak's chaos
        first.wait()
        time.sleep(0.2)     # the client's ZeroMQ thread sees the connection drop (the client looked
                            # for the actor less than a second ago, so it does not look again yet)
        not_sent = [n for n in (1, 2, 3) if not client.send({"n": n})]

        second = start_actor(run, second_out)
        for n in not_sent:
            send_until_sent(client, {"n": n})
        send_until_sent(client, {"n": 4})
        assert wait_received(second_out, [1, 2, 3, 4]) == [1, 2, 3, 4]
        assert not_sent == [1, 2, 3]            # none was reported sent while no actor was there
    finally:
        client.close()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
