"""Matching an admin request to its route: the one place that reads an admin path. Pure.

A route is (method, path pattern) -> handler; a pattern is literal segments and `{id}`, which
matches one non-empty segment (percent-decoded). The table itself is in api.py, next to the
handlers it names. Matching ignores the query string and a trailing slash, and takes the method
in any case. A path no pattern matches is a 404 that lists the routes; a path that matches with
another method is a 405 that lists the methods it allows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str                # "/admin/keys/{id}"
    handler: Any                # what api.py calls; this module never calls it
    on_store: bool = False      # works on the governance store alone (the CLI runs it too)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.strip("/").split("/"))


@dataclass(frozen=True)
class Request:
    """An admin request as its handler sees it."""
    method: str
    path: str                   # without the query string
    query: dict
    body: bytes = b""
    id: str | None = None       # the {id} segment, decoded


@dataclass(frozen=True)
class Match:
    route: Route
    request: Request


class NoRoute(Exception):
    """404 (no such path) or 405 (not with this method); the message says what exists."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def split_target(target: str) -> tuple[str, dict]:
    """"/admin/report?by=key&since=7d" -> ("/admin/report", {"by": "key", "since": "7d"})."""
    path, _, qs = target.partition("?")
    return path, dict(parse_qsl(qs))


def match(table: tuple[Route, ...], method: str, path: str, query: dict | None = None,
          body: bytes | str | None = b"") -> Match:
    """The route `method path` takes, with its request. Raises NoRoute."""
    path = path.split("?", 1)[0]
    method = method.upper()
    parts = path.rstrip("/").split("/") if path.startswith("/") else None
    allowed: list[str] = []
    for route in table:
        id = _fit(route.segments, parts)
        if id is False:
            continue
        if route.method == method:
            return Match(route, Request(method, path, query or {}, body or b"", id))
        allowed.append(route.method)
    if allowed:
        raise NoRoute(405, f"{method} is not allowed on {path} (allowed: {', '.join(allowed)})")
    patterns = ", ".join(dict.fromkeys(r.pattern for r in table))
    raise NoRoute(404, f"no admin route {path!r} (routes: {patterns})")


def _fit(segments: tuple[str, ...], parts: list[str] | None):
    """The decoded {id} when the path's parts fit the pattern (None when it has none), else False."""
    if parts is None or len(parts) != len(segments) + 1 or parts[0] != "":
        return False
    id = None
    for want, got in zip(segments, parts[1:]):
        if want == "{id}":
            id = unquote(got)
            if not id:
                return False
        elif want != got:
            return False
    return id
