"""`name = lazy("module", globals())`: a module imported on its first attribute access, not by the
module that names it.

For dependencies that weigh megabytes of RSS in every process that imports them (psycopg and its
libpq, about 20 MiB; trio with ssl, about 15 MiB) and that a module needs only in some processes
or on some configurations: a process that never calls the functions using them never imports them.
Use the name as the module itself (`psycopg.connect(...)`, `except psycopg.Error`, `trio.sleep`).
Given the importing module's `globals()`, the first access also rebinds the name there to the
real module, so later accesses cost nothing extra. A `from x import y` of such a module goes inside
the function that uses it.
"""
from __future__ import annotations

import importlib


class LazyModule:
    __slots__ = ("_name", "_namespace", "_as", "_module")

    def __init__(self, name: str, namespace: dict | None = None, as_: str | None = None):
        self._name = name
        self._namespace = namespace
        self._as = as_ or name.rpartition(".")[2]
        self._module = None

    def __getattr__(self, attr: str):
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
            if self._namespace is not None and self._namespace.get(self._as) is self:
                self._namespace[self._as] = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy(name: str, namespace: dict | None = None, as_: str | None = None) -> LazyModule:
    """The module `name`, imported on first use; with `namespace` (the caller's globals()), the
    first use also replaces the caller's global `as_` (default: the last part of `name`) with it."""
    return LazyModule(name, namespace, as_)
