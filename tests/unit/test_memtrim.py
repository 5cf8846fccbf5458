"""shared/memtrim.py: free heap memory held by the C allocator goes back to the system."""
from __future__ import annotations

import subprocess
import sys

import pytest

from finops.shared import memtrim

# In a fresh interpreter: 40 MiB of 2 KiB buffers (over pymalloc's 512 bytes: glibc's malloc
# serves them), every 64th kept so the freed ones sit between live ones and below the top of the
# heap, where glibc never returns memory on its own; then the RSS before and after malloc_trim(0).
FRAGMENT = """
import sys
from finops.shared import memtrim

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

bufs = [bytearray(2048) for _ in range(20480)]
kept = bufs[::64]
del bufs
before = rss_kib()
memtrim.trimmer()(0)
print(before, rss_kib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or memtrim.trimmer() is None,
                    reason="malloc_trim is glibc's")
def test_a_trim_returns_the_free_pages_inside_the_heap():
    r = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True, check=True)
    before, after = map(int, r.stdout.split())
    assert before - after > 20 * 1024, (before, after)     # most of the 40 MiB freed, not kept resident


def test_without_malloc_trim_nothing_runs(monkeypatch):
    monkeypatch.setattr(memtrim, "trimmer", lambda: None)
    import trio
    trio.run(memtrim.run, 0.0)      # returns at once instead of looping
