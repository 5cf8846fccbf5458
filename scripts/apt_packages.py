"""Debian packages that development tools need (nginx and wrk for the bench, Chromium for the
dashboard test, redis-server for the Redis ledger's tests), installed with apt-get when missing.
One way to do it for every caller: `apt-get update` only when the package lists are empty or the
first install fails, DEBIAN_FRONTEND=noninteractive, sudo (non-interactive) when not root.

    python3 scripts/apt_packages.py PACKAGE[=EXECUTABLE] ...

installs each package whose executable (default: the package's name; looked for on PATH and in
/usr/sbin, /usr/bin) is missing, and does nothing when all are there (.ci/run uses it).
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


def find_executable(name: str) -> str | None:
    """`name` on PATH, or in /usr/sbin or /usr/bin (root's PATH may lack /usr/sbin)."""
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)


def ensure(wanted: dict[str, str], log=lambda msg: print(f"[apt] {msg}", file=sys.stderr, flush=True)) -> None:
    """Install the packages of `wanted` ({package: executable}) whose executable is missing."""
    missing = [pkg for pkg, exe in wanted.items() if not find_executable(exe)]
    if missing:
        install(missing, log)


def main(argv: list[str]) -> int:
    if not argv or any(a.startswith("-") for a in argv):
        print("usage: python3 scripts/apt_packages.py PACKAGE[=EXECUTABLE] ...", file=sys.stderr)
        return 2
    wanted = {}
    for a in argv:
        pkg, _, exe = a.partition("=")
        wanted[pkg] = exe or pkg
    try:
        ensure(wanted)
    except AptError as e:
        print(f"[apt] {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
