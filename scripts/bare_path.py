#!/usr/bin/env python3
"""The design's bare path, the floor of scripts/bench.py (its `bare` scenario): the gateway's
shape with none of its work.

    python scripts/bare_path.py serve --port 8090 --workers 2 \\
        --converse-body converse.json --stream-body converse-stream.bin

Hypercorn (trio worker, the gateway frontend's own Hypercorn settings, keep-alive timer, writes and listening socket)
serves an ASGI app that sends each request's id over a ZeroMQ PUSH socket to `--workers` trio
worker processes (round robin); each worker PUSHes the answer back to the frontend's PULL socket,
and the frontend answers with it. Nothing is parsed (neither the request body nor the answer)
and nothing goes upstream: a path ending in `/converse-stream` gets the frames of
`--stream-body` (an AWS event stream, sent by the worker one frame per message, as the gateway's
workers send chunks; the frontend writes whatever frames have arrived in one go), any other
path the bytes of `--converse-body`. ZeroMQ is driven through the gateway's own trio adapter
(finops.shared.transport). The workers are this script's children (`bare_path.py worker ...`),
so CPU summed over the process tree is the whole path's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import trio
import zmq
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from finops.frontend import h11_writes, keepalive
from finops.frontend.server import hypercorn_config, listen_socket
from finops.shared import config as configmod
from finops.shared import transport

ANSWER, CHUNK, END = b"a", b"c", b"e"     # worker -> frontend: rid(8) + kind + payload
CONVERSE, STREAM = b"c", b"s"             # frontend -> worker: rid(8) + kind


def split_frames(data: bytes) -> list[bytes]:
    """An AWS event stream cut into its frames (each starts with its total length, big-endian)."""
    frames, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if n < 16 or i + n > len(data):
            raise ValueError(f"not an event stream: frame of {n} bytes at offset {i}")
        frames.append(data[i:i + n])
        i += n
    return frames


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --- worker --------------------------------------------------------------------------------------

async def worker(pull_ep: str, push_ep: str, body: bytes, frames: list[bytes]) -> None:
    inbox = transport.AsyncSocket(transport.make_socket(zmq.PULL))
    inbox.sock.connect(pull_ep)
    out = transport.AsyncSocket(transport.make_socket(zmq.PUSH))
    out.sock.connect(push_ep)
    parent = os.getppid()

    async def orphan_watch():
        while os.getppid() == parent:
            await trio.sleep(1.0)
        os._exit(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(orphan_watch)
        while True:
            msg = await inbox.recv()
            rid = msg[:8]
            if msg[8:9] == STREAM:
                for frame in frames:
                    await out.send(rid + CHUNK + frame)
                await out.send(rid + END)
            else:
                await out.send(rid + ANSWER + body)


# --- frontend ------------------------------------------------------------------------------------

class App:
    """ASGI app: request id -> worker -> answer, nothing parsed."""

    def __init__(self, to_workers: transport.AsyncSocket):
        self.out = to_workers
        self.next_id = 0
        self.waiting: dict[bytes, list] = {}     # rid -> [trio.Event, answer] (Converse)
        self.streams: dict[bytes, trio.MemorySendChannel] = {}
        self.prefix = f"{os.getpid():x}-".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        self.next_id += 1
        rid = self.next_id.to_bytes(8, "big")
        headers = [(b"x-amzn-requestid", self.prefix + str(self.next_id).encode())]
        if scope["path"].endswith("/converse-stream"):
            send_ch, recv_ch = trio.open_memory_channel(float("inf"))
            self.streams[rid] = send_ch
            try:
                await self.out.send(rid + STREAM)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/vnd.amazon.eventstream"), *headers]})
                ended = False
                while not ended:     # every frame already here goes out in one write
                    try:
                        parts = [await recv_ch.receive()]
                    except trio.EndOfChannel:
                        break
                    while True:
                        try:
                            parts.append(recv_ch.receive_nowait())
                        except trio.WouldBlock:
                            break
                        except trio.EndOfChannel:
                            ended = True
                            break
                    await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                self.streams.pop(rid, None)
            return
        slot = [trio.Event(), b""]
        self.waiting[rid] = slot
        try:
            await self.out.send(rid + CONVERSE)
            await slot[0].wait()
        finally:
            self.waiting.pop(rid, None)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(slot[1])).encode()), *headers]})
        await send({"type": "http.response.body", "body": slot[1], "more_body": False})

    async def read_answers(self, inbox: transport.AsyncSocket) -> None:
        while True:
            batch = [await inbox.recv()] + inbox.recv_batch_nowait()
            for msg in batch:
                rid, kind = msg[:8], msg[8:9]
                if kind == ANSWER:
                    slot = self.waiting.get(rid)
                    if slot is not None:
                        slot[1] = msg[9:]
                        slot[0].set()
                    continue
                ch = self.streams.get(rid)
                if ch is None:
                    continue
                if kind == CHUNK:
                    ch.send_nowait(msg[9:])
                else:
                    ch.close()


async def serve(sock, run_dir: str, args) -> None:
    out = transport.AsyncSocket(transport.make_socket(zmq.PUSH))
    out_ep = transport.bind(out.sock, transport.endpoint_for("bare-out", run_dir, "ipc"))
    inbox = transport.AsyncSocket(transport.make_socket(zmq.PULL))
    in_ep = transport.bind(inbox.sock, transport.endpoint_for("bare-in", run_dir, "ipc"))
    workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", "--pull", out_ep,
                                 "--push", in_ep, "--converse-body", args.converse_body,
                                 "--stream-body", args.stream_body], stdin=subprocess.DEVNULL)
               for _ in range(args.workers)]
    app = App(out)
    keepalive.install()                  # the frontend's keep-alive timer and writes: the same server layer
    h11_writes.install()
    hc = hypercorn_config(configmod.load(None, environ={}))
    stop = trio.Event()

    async def on_signal():
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                stop.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            nursery.start_soon(app.read_answers, inbox)
            await worker_serve(wrap_app(app, hc.wsgi_max_body_size, "asgi"), hc,
                               sockets=Sockets([], [sock], []), shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()
    finally:
        for p in workers:
            p.terminate()
        for p in workers:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bare_path.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="the frontend (starts the workers)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--workers", type=int, default=2)
    w = sub.add_parser("worker", help="one worker (started by serve)")
    w.add_argument("--pull", required=True)
    w.add_argument("--push", required=True)
    for p in (s, w):
        p.add_argument("--converse-body", required=True, help="the bytes every Converse request gets")
        p.add_argument("--stream-body", required=True, help="an AWS event stream every ConverseStream gets")
    args = ap.parse_args(argv)
    args.converse_body, args.stream_body = os.path.abspath(args.converse_body), os.path.abspath(args.stream_body)
    body, frames = read(args.converse_body), split_frames(read(args.stream_body))
    if args.cmd == "worker":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        trio.run(worker, args.pull, args.push, body, frames)
        return 0
    run_dir = tempfile.mkdtemp(prefix="finops-bare-")
    try:
        trio.run(serve, listen_socket(args.host, args.port), run_dir, args)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
