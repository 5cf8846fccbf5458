"""Debian packages that development tools need (nginx and wrk for the bench, Chromium for the
dashboard test), installed with apt-get when missing. One way to do it for every caller:
`apt-get update` only when the package lists are empty or the first install fails,
DEBIAN_FRONTEND=noninteractive, sudo (non-interactive) when not root.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


class AptError(RuntimeError):
    """The packages are missing and could not be installed; the message says how to."""


def install(packages: list[str], log=lambda msg: print(f"[apt] {msg}", file=sys.stderr, flush=True)) -> None:
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        raise AptError(f"missing {', '.join(packages)} and not root (no sudo); "
                       f"run: sudo apt-get install -y {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lists = "/var/lib/apt/lists"
    fresh = os.path.isdir(lists) and any("_Packages" in f for f in os.listdir(lists))
    for attempt in range(2):
        if attempt or not fresh:
            log("apt-get update")
            subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        log(f"apt-get install -y {' '.join(packages)}")
        r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq"] + packages, env=env, timeout=1200)
        if r.returncode == 0:
            return
    raise AptError(f"apt-get install {' '.join(packages)} failed; install by hand: "
                   f"apt-get install -y {' '.join(packages)}")
