"""Debian's Chromium for browser tests, installed with apt-get when it is missing.

Playwright drives it with `executable_path=chromium_path()`; no browser is downloaded (this
machine reaches only the package registries). The install mirrors scripts/bench.py's
`ensure_tools`: `apt-get update` only when the package lists are empty or the first install
fails, DEBIAN_FRONTEND=noninteractive, sudo when not root.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGE = "chromium"
NAMES = ("chromium", "chromium-browser")
# Flags for a closed network and a container: no sandbox (root), no GPU, no background traffic.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]


class ChromiumMissing(RuntimeError):
    """Chromium is not installed and could not be installed; the message says how to."""


def find_chromium() -> str | None:
    for name in NAMES:
        path = shutil.which(name) or f"/usr/bin/{name}"
        if os.access(path, os.X_OK):
            return path
    return None


def log(msg: str) -> None:
    print(f"[chromium] {msg}", file=sys.stderr, flush=True)


def install() -> None:
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        raise ChromiumMissing(f"chromium is missing and this is not root (no sudo); "
                              f"run: apt-get install -y {PACKAGE}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lists = "/var/lib/apt/lists"
    fresh = os.path.isdir(lists) and any("_Packages" in f for f in os.listdir(lists))
    for attempt in range(2):
        if attempt or not fresh:
            log("apt-get update")
            subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
        log(f"apt-get install -y {PACKAGE}")
        r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", PACKAGE], env=env, timeout=1200)
        if r.returncode == 0:
            return
    raise ChromiumMissing(f"apt-get install {PACKAGE} failed; install it by hand: apt-get install -y {PACKAGE}")


def chromium_path() -> str:
    """The path of a Chromium executable, installing Debian's `chromium` package when missing."""
    path = find_chromium()
    if path is None:
        install()
        path = find_chromium()
        if path is None:
            raise ChromiumMissing(f"apt-get installed {PACKAGE} but no chromium executable is on PATH")
    return path


__all__ = ["chromium_path", "find_chromium", "ARGS", "ChromiumMissing"]
