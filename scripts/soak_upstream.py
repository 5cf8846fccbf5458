#!/usr/bin/env python3
"""The slow and the failing upstream of scripts/soak.py: one Bedrock-compatible fake on loopback.

    python scripts/soak_upstream.py --slow-model M1 --failing-model M2 --slow-ms 800 --port-file F

It is the tests' `FakeBedrock` (tests/helpers/fake_bedrock.py: real wire shapes, SigV4 checked
with the AWS key AKIDSOAK / soak-upstream-secret), scripted by model id:

* the slow model waits `--slow-ms` before answering, and streams with 20 ms between events;
* the failing model answers each request with one of (drawn at random, --seed):
  15 % a TCP reset before any byte (SO_LINGER 0), 30 % a 500 InternalServerException,
  15 % a 503 ServiceUnavailableException, 15 % half an answer then a dropped connection (a stream:
  three events, then half of the fourth), 10 % a stream ending in a modelStreamErrorException frame
  (for a non-stream operation: a normal answer), 15 % a normal answer;
* any other model is answered normally.

It writes its port to --port-file once it listens and serves until SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import struct
import sys
import threading
from urllib.parse import unquote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.helpers.fake_bedrock import FakeBedrock  # noqa: E402

ACCESS_KEY_ID = "AKIDSOAK"
SECRET = "soak-upstream-secret"
RESET, E500, E503, CUT, EXCEPTION, OK = "reset", "500", "503", "cut", "exception", "ok"
FAILING_MIX = ((RESET, 15), (E500, 30), (E503, 15), (CUT, 15), (EXCEPTION, 10), (OK, 15))


class SoakUpstream(FakeBedrock):
    def __init__(self, slow_model: str, failing_model: str, slow_ms: float, seed: int):
        super().__init__(ACCESS_KEY_ID, SECRET)
        self.slow_model, self.failing_model, self.slow_s = slow_model, failing_model, slow_ms / 1000.0
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()
        self.choices = [k for k, w in FAILING_MIX for _ in range(w)]
        self.draw = threading.local()      # this connection thread's draw, for _take_script

    def _handle(self, h) -> None:
        parts = h.path.split("?", 1)[0].split("/")
        model = unquote(parts[2]) if len(parts) > 3 and parts[1] == "model" else None
        draw = OK
        if model == self.failing_model:
            with self.rng_lock:
                draw = self.rng.choice(self.choices)
        self.draw.value = draw
        if draw == RESET:
            self._read_body(h, self._headers_of(h))
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()           # an RST, no byte of an answer
            return
        super()._handle(h)
        with self._lock:                   # a soak sends hundreds of thousands: keep no record
            self.requests.clear()

    def _take_script(self, model, api_key=None) -> dict:
        if model == self.slow_model:
            return {"delay": self.slow_s, "event_delay": 0.02}
        if model != self.failing_model:
            return {}
        return {E500: {"status": 500, "code": "InternalServerException", "message": "soak: scripted 500"},
                E503: {"status": 503, "code": "ServiceUnavailableException", "message": "soak: scripted 503"},
                CUT: {"then": "cut", "stream_events": 3},
                EXCEPTION: {"stream_events": 3, "then": "exception", "message": "soak: scripted stream error"},
                }.get(getattr(self.draw, "value", OK), {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slow-model", required=True)
    ap.add_argument("--failing-model", required=True)
    ap.add_argument("--slow-ms", type=float, default=800.0)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args(argv)
    fake = SoakUpstream(a.slow_model, a.failing_model, a.slow_ms, a.seed)
    fake.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(fake.port))
    os.replace(a.port_file + ".tmp", a.port_file)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
