"""Portkey's AI gateway as a bench target: installed from npm into a cache directory, started on
loopback (scripts/bench.py's `portkey` scenario; docs/peers.md says how it was first measured).

The install is `@portkey-ai/gateway@VERSION` with `@hono/node-server` pinned by an npm override:
the version npm picks by default fails every streaming request with `TypeError: immutable`
(Portkey-AI/gateway #1389, #1550). It lives in `.bench-cache/portkey/` of the repo (git-ignored)
and is reused while its package.json and installed versions match. Node is single-threaded:
Portkey is one process, started with `--require scripts/bench/portkey-loopback.js` so that its
listen() binds 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PACKAGE = "@portkey-ai/gateway"
VERSION = "1.15.2"
OVERRIDES = {"@hono/node-server": "1.13.8"}
CACHE_DIR = os.path.join(ROOT, ".bench-cache", "portkey")
PRELOAD = os.path.join(HERE, "bench", "portkey-loopback.js")
START = os.path.join("node_modules", *PACKAGE.split("/"), "build", "start-server.js")


class PortkeyError(RuntimeError):
    """Portkey could not be installed; the message says why and what to do."""


def tools() -> tuple[str, str] | None:
    """(node, npm), or None when either is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    return (node, npm) if node and npm else None


def manifest() -> dict:
    return {"name": "finops-bench-portkey", "private": True, "description": "installed by scripts/bench.py",
            "dependencies": {PACKAGE: VERSION}, "overrides": dict(OVERRIDES)}


def installed_version(cache_dir: str, package: str) -> str | None:
    try:
        with open(os.path.join(cache_dir, "node_modules", *package.split("/"), "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


def is_installed(cache_dir: str = CACHE_DIR) -> bool:
    """The cache holds exactly what manifest() asks for."""
    try:
        with open(os.path.join(cache_dir, "package.json")) as f:
            if json.load(f) != manifest():
                return False
    except (OSError, ValueError):
        return False
    wanted = {PACKAGE: VERSION, **OVERRIDES}
    return (all(installed_version(cache_dir, p) == v for p, v in wanted.items())
            and os.path.exists(os.path.join(cache_dir, START)))


def install(npm: str, log, cache_dir: str = CACHE_DIR) -> str:
    """Install (or reuse) Portkey in `cache_dir`; returns the directory. npm's output goes to
    `cache_dir`/npm-install.log."""
    if is_installed(cache_dir):
        return cache_dir
    log(f"installing {PACKAGE}@{VERSION} from npm into {os.path.relpath(cache_dir, ROOT)} "
        f"(overrides {OVERRIDES})")
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, "package.json"), "w") as f:
        json.dump(manifest(), f, indent=2)
    logfile = os.path.join(cache_dir, "npm-install.log")
    with open(logfile, "wb") as out:
        try:
            r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--ignore-scripts"],
                               cwd=cache_dir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               timeout=900)
        except subprocess.TimeoutExpired:
            raise PortkeyError(f"npm install of {PACKAGE}@{VERSION} took more than 15 minutes; see {logfile}") from None
    if r.returncode != 0 or not is_installed(cache_dir):
        got = {p: installed_version(cache_dir, p) for p in (PACKAGE, *OVERRIDES)}
        raise PortkeyError(f"npm install of {PACKAGE}@{VERSION} failed (exit {r.returncode}, installed {got}); "
                           f"see {logfile}")
    return cache_dir


def command(node: str, port: int, cache_dir: str = CACHE_DIR) -> tuple[list[str], dict]:
    """argv and environment that start Portkey on 127.0.0.1:`port` (run it with cwd=`cache_dir`)."""
    argv = [node, "--require", PRELOAD, os.path.join(cache_dir, START), "--headless", f"--port={port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_", "npm_"))}
    env["NODE_ENV"] = "production"
    return argv, env


def upstream_headers(fake_url: str, stream: bool) -> dict:
    """The headers that send a Chat Completions request through Portkey to the nginx fake's
    OpenAI route (`/stream/v1` answers every request as SSE)."""
    return {"x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{fake_url}/{'stream/v1' if stream else 'v1'}",
            "authorization": "Bearer sk-bench"}
