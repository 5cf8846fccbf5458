"""CPU accounting from /proc for the harnesses (bench.py, cache_bench.py): one process's counters
and a process tree."""
from __future__ import annotations

import collections
import os


def read_stat(pid: int):
    """(ppid, utime+stime, cutime+cstime, start time) in clock ticks, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]), int(fields[19])


def tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children = collections.defaultdict(list)
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                children[st[0]].append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if read_stat(pid) is None:
            continue
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out
