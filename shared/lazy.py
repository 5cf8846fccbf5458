"""`lazy("psycopg")`: a module imported on its first attribute access, not by the module that
names it.

For the heavy optional dependencies (psycopg and its libpq: about 20 MiB of RSS) that a module
needs only on some configurations: every process that imports the module pays nothing until
one of its functions runs. Use it as the module itself (`psycopg.connect(...)`,
`except psycopg.Error`); `from x import y` of such a module goes inside the function that uses it.
"""
from __future__ import annotations

import importlib


class LazyModule:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy(name: str) -> LazyModule:
    return LazyModule(name)
