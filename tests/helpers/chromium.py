"""Debian's Chromium for browser tests, installed with apt-get when it is missing.

Playwright drives it with `executable_path=chromium_path()`; no browser is downloaded (this
machine reaches only the package registries). The install is scripts/apt_packages.py's, as for
the bench's nginx and wrk.
"""
from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
import apt_packages  # noqa: E402

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


def install() -> None:
    try:
        apt_packages.install([PACKAGE], lambda msg: print(f"[chromium] {msg}", file=sys.stderr, flush=True))
    except apt_packages.AptError as e:
        raise ChromiumMissing(str(e)) from None


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
