"""The spend dashboard's static files (frontend/ui/), served at /ui by the gateway itself.

`lookup(raw_path)` maps a request path to (body, headers), or None when there is no such file:

    /ui, /ui/       -> index.html
    /ui/<name>      -> the file <name> directly in frontend/ui, if its type is one we serve

Nothing else is served: no subfolders, no `..`, no percent-decoding (a name must match a file
exactly, so `/ui/%2e%2e/x` is simply unknown), no hidden files. The files carry no data and need
no token; the page fetches its data from the admin API (/admin/dashboard) with the admin token.

Every file is read once, on the first lookup, and kept in memory with its headers. Each answer
carries a strict Content-Security-Policy (scripts, styles and fetches from this origin only, no
inline script) and `X-Content-Type-Options: nosniff`. index.html is `no-cache`, so an upgraded
gateway's page is picked up at once. Pure: file reads only, no I/O library.
"""
from __future__ import annotations

import os

UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")
PREFIX = b"/ui"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
    ".svg": b"image/svg+xml",
}

CSP = (b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       b"form-action 'self'; frame-ancestors 'none'")
COMMON_HEADERS = [
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
NO_CACHE = b"no-cache"
ASSET_CACHE = b"public, max-age=300"   # names are not versioned: keep it short

Entry = tuple[bytes, list[tuple[bytes, bytes]]]

_files: dict[str, Entry] | None = None


def load(directory: str = UI_DIR) -> dict[str, Entry]:
    """Every servable file directly in `directory`: name -> (body, headers)."""
    out: dict[str, Entry] = {}
    for name in sorted(os.listdir(directory)):
        ctype = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
        path = os.path.join(directory, name)
        if ctype is None or name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            body = f.read()
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", NO_CACHE if name == INDEX else ASSET_CACHE)] + COMMON_HEADERS
        out[name] = (body, headers)
    return out


def files() -> dict[str, Entry]:
    global _files
    if _files is None:
        _files = load()
    return _files


def is_ui_path(raw_path: bytes) -> bool:
    return raw_path == PREFIX or raw_path.startswith(PREFIX + b"/")


def lookup(raw_path: bytes, table: dict[str, Entry] | None = None) -> Entry | None:
    """(body, headers) for a /ui path, or None when it names no file we serve.

    The headers are a fresh list each time, so the caller may append to it.
    """
    if not is_ui_path(raw_path):
        return None
    rest = raw_path[len(PREFIX) + 1:] or INDEX.encode()     # "/ui" and "/ui/" -> index.html
    if b"/" in rest or b"\\" in rest or b"%" in rest or rest.startswith(b"."):
        return None
    try:
        name = rest.decode("ascii")
    except UnicodeDecodeError:
        return None
    entry = (files() if table is None else table).get(name)
    if entry is None:
        return None
    body, headers = entry
    return body, list(headers)


__all__ = ["lookup", "load", "is_ui_path", "UI_DIR", "CSP"]
