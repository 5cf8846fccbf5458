"""Hand the C allocator's free pages back to the system, every TRIM_SECONDS (frontend, workers).

What made the frontend's and the long-lived worker's RSS creep under the soak (scripts/soak.py) was
not Python objects: their count (gc), the interpreter's allocated blocks
(sys.getallocatedblocks) and the bytes glibc's malloc has handed out (mallinfo2 `uordblks`) all
stay flat while RSS grows. What grows is the free space inside glibc's heap (`fordblks`): the
memory of objects over 512 bytes (request bodies, stream frames, envelopes, h11 buffers) comes
from malloc, and each burst of requests in flight (a worker or the ledger killed, traffic
moving to the other worker) leaves the heap larger, its free chunks held between live ones.
glibc gives back only the free memory at the very top of its heap on its own; `malloc_trim(0)`
also returns the whole free pages inside it (madvise), which is what keeps RSS flat.

Measured with the soak's traffic and kills at 150 requests/s (README "Soak"): without it, from
the first minute to the fifth the frontend grew +3.3 % and the long-lived worker +1.9 %, all of it
free heap; with a trim every 10 s, from the first minute to the tenth, +0.4 % and +0.6 % (the
heap's free space still grows, 2.7 -> 5.0 MiB in the frontend, but its pages are not resident).
A trim takes 0.1-0.3 ms.

On a C library without `malloc_trim` (musl, macOS) `trimmer()` is None and nothing runs.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("finops.memtrim")

TRIM_SECONDS = 10.0


def trimmer():
    """The C library's `malloc_trim` (call it with 0), or None when it has none."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


async def run(every: float = TRIM_SECONDS) -> None:
    """For the process's lifetime (in its trio nursery): `malloc_trim(0)` every `every` seconds."""
    import trio

    fn = trimmer()
    if fn is None:
        log.info("no malloc_trim in this C library; free heap memory stays with the process")
        return
    while True:
        await trio.sleep(every)
        fn(0)
