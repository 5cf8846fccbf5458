"""Circuit states across workers, for GET /admin/circuits.

Circuits are per worker (README: Load balancing and fallbacks), so each worker writes its own
states to <run_dir>/circuits-<pid>.json, twice a second when they changed, and an admin request
(whichever worker it reaches) reads every live worker's file. The state is read on the trio loop
(it is the routing's, in memory); the files are written and read in a thread.
"""
from __future__ import annotations

import glob
import json
import os

import trio

from finops.shared import transport

PUBLISH_SECONDS = 0.5       # how stale another worker's states may be in /admin/circuits
PREFIX, SUFFIX = "circuits-", ".json"


class CircuitFiles:
    def __init__(self, circuits, run_dir: str):
        self.circuits = circuits            # routing's Circuits: snapshot() -> {target: state}
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, f"{PREFIX}{os.getpid()}{SUFFIX}")
        self._published: dict = {}
        self._lock = trio.Lock()            # one write at a time (the loop below, an admin request)

    async def run(self) -> None:
        """For the worker's lifetime: publish this worker's states when they changed."""
        while True:
            await trio.sleep(PUBLISH_SECONDS)
            await self.publish()

    async def publish(self) -> None:
        """Write this worker's states when they changed (or an open circuit is counting down)."""
        async with self._lock:
            snap = self.circuits.snapshot()
            if snap == self._published and not any(v.get("retry_in_s") for v in snap.values()):
                return
            await trio.to_thread.run_sync(write_json, self.path, snap)
            self._published = snap

    async def report(self) -> dict:
        """Every live worker's states, this worker's as of now: {"workers": {pid: {target: state}}}."""
        await self.publish()
        return {"workers": await trio.to_thread.run_sync(read_all, self.run_dir)}


def write_json(path: str, doc) -> None:
    """Replace `path` atomically (readers never see half a file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)


def read_all(run_dir: str) -> dict:
    """{pid: states} from the files of the workers that are alive (a dead worker's file stays
    behind until a worker with its pid replaces it)."""
    out = {}
    for path in glob.glob(os.path.join(run_dir, f"{PREFIX}*{SUFFIX}")):
        pid = os.path.basename(path)[len(PREFIX):-len(SUFFIX)]
        if not pid.isdigit() or not transport.pid_alive(int(pid)):
            continue
        try:
            with open(path) as f:
                out[pid] = json.load(f)
        except (OSError, ValueError):
            continue
    return out
