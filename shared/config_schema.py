"""Config tables as typed structs: msgspec checks the types, this module words the errors. Pure.

A table's shape is declared once, as a `Table` (a msgspec Struct): field types, defaults and
limits (`Annotated[int, Meta(ge=1)]`, `Literal["ipc", "tcp"]`). `table(cls, raw, where)` builds it
from the parsed TOML and turns msgspec's report into a `ConfigError` that names the key and says
what to write, like every config error:

    server.port: expected int, got 'eighty'
    server.wokers: unknown key (known keys: data_dir, drain_seconds, ...)
    server.workers: must be >= 1, got 0
    server.transport: must be one of ipc, tcp, got 'udp'
    providers.p.headers: expected a table of strings, got int 1

Checks types cannot say (one field against another, a file that must exist) are the table's
`check(where)`, run after the conversion.

Conversion is msgspec's lax mode: a string where a number or a boolean is expected is read as one
("8080", "true"), since `${VAR}` expansion always yields strings. Dataclasses (the governance
records) are built the same way; msgspec ignores unknown keys there, so `table` checks them first.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import msgspec
from msgspec import inspect as mi

MISSING = object()


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and says what is wrong."""


# units of the config's defaults, so each reads with its unit (hypercorn's habit: 5 * SECONDS)
SECONDS = 1.0
MIB = 1024 * 1024


class Table(msgspec.Struct, forbid_unknown_fields=True):
    """A config table: unknown keys are errors; `check` validates what the types cannot."""

    def check(self, where: str) -> None:
        """Raise ConfigError for what the field types cannot say. `where` is the table's key path."""


def table(cls, raw: Any, where: str, *, fixed: dict | None = None, also_known: tuple = ()):
    """Build `cls` (a Table or a dataclass) from `raw`, then run its `check`.

    Args:
        fixed: fields the caller sets (a provider's `name`): not keys of the table.
        also_known: keys the caller reads from the table itself (a provider's `kind`).
    Raises:
        ConfigError naming the key (``where`` + its path inside the table).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    fixed = fixed or {}
    names = field_names(cls)
    for key in raw:
        if key in fixed or (key not in names and dataclasses.is_dataclass(cls)):
            raise unknown_key(where, key, names - set(fixed), also_known)
    try:
        obj = msgspec.convert({**raw, **fixed}, cls, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(explain(str(e), cls, raw, where, hidden=set(fixed), also_known=also_known)) from None
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def field_names(cls) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(cls.__struct_fields__)


def unknown_key(where: str, key: str, known, also_known=()) -> ConfigError:
    return ConfigError(f"{where}.{key}: unknown key (known keys: {', '.join(sorted({*known, *also_known}))})")


# --- wording msgspec's errors -------------------------------------------------------------------

_AT = re.compile(r"(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_TYPE_NAMES = {"object": "dict", "array": "list", "null": "nothing"}
_PLURALS = {"str": "strings", "int": "integers", "float": "numbers", "bool": "booleans", "object": "tables"}


def explain(message: str, cls, raw: dict, where: str, *, hidden=(), also_known=()) -> str:
    """msgspec's ValidationError text -> our message: the full key path, then the problem."""
    m = _AT.fullmatch(message)
    what, path = m["what"], m["path"] or ""
    if "[...]" in path:                      # a value of a table of values: name the table
        owner = path[:path.index("[...]")]
        want = re.match(r"Expected `([^`]+)`", what)
        kind = _PLURALS.get(want[1], f"{want[1]} values") if want else "values"
        return f"{where}{owner}: expected a table of {kind}, {_got(_value_at(raw, owner), inner=True)}"
    if u := re.fullmatch(r"Object contains unknown field `(.+)`", what):
        known = field_names(_type_at(cls, path)) - (set(hidden) if not path else set())
        return str(unknown_key(f"{where}{path}", u[1], known, also_known if not path else ()))
    if r := re.fullmatch(r"Object missing required field `(.+)`", what):
        return f"{where}{path}.{r[1]}: missing"
    value = _value_at(raw, path)
    key = f"{where}{path}"
    if re.fullmatch(r"Invalid enum value .*", what):
        options = _type_at(cls, path)
        choices = ", ".join(f'"{v}"' for v in getattr(options, "values", ()))
        return f"{key}: must be one of {choices}, got {value!r}"
    if c := re.fullmatch(r"Expected `([^`]+)` of length ([<>]=?) (\d+)", what):
        return f"{key}: must have {_length_words(c[2], c[3])}, got {len(value) if hasattr(value, '__len__') else value!r}"
    if c := re.fullmatch(r"Expected `([^`]+)` ([<>]=?) (\S+)", what):
        return f"{key}: must be {c[2]} {_number(c[3])}, got {value!r}"
    if t := re.fullmatch(r"Expected `([^`]+)`, got `[^`]+`", what):
        want = " or ".join(_TYPE_NAMES.get(x, x) for x in t[1].split(" | "))
        return f"{key}: expected {want}, {_got(value)}"
    return f"{key}: {what}"


def _got(value, *, inner: bool = False) -> str:
    if value is MISSING:
        return "got something else"
    if inner and isinstance(value, dict):       # the table itself: name its first bad value
        bad = next((v for v in value.values() if not isinstance(v, str)), MISSING)
        return _got(bad)
    if isinstance(value, str):
        return f"got {value!r}"                 # numbers from ${VAR} are strings: the text says it all
    return f"got {type(value).__name__} {value!r}"


def _number(text: str) -> str:
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def _length_words(op: str, n: str) -> str:
    if op == ">=" and n == "1":
        return "at least one item"
    return f"length {op} {n}"


def _segments(path: str) -> list[str | int]:
    return [name or (int(i) if i.isdigit() else i) for name, i in _SEGMENT.findall(path)]


def _value_at(raw, path: str):
    v = raw
    for seg in _segments(path):
        if isinstance(seg, str) and isinstance(v, dict) and seg in v:
            v = v[seg]
        elif isinstance(seg, int) and isinstance(v, list) and seg < len(v):
            v = v[seg]
        else:
            return MISSING
    return v


def _type_at(cls, path: str):
    """The msgspec type info (or class) found at `path` inside `cls`."""
    t = mi.type_info(cls)
    for seg in _segments(path):
        t = _unwrap(t)
        if isinstance(seg, str) and isinstance(t, (mi.StructType, mi.DataclassType)):
            t = next(f.type for f in t.fields if f.name == seg)
        elif isinstance(t, (mi.ListType, mi.VarTupleType)):
            t = t.item_type
        elif isinstance(t, mi.DictType):
            t = t.value_type
    t = _unwrap(t)
    return t.cls if isinstance(t, (mi.StructType, mi.DataclassType)) else t


def _unwrap(t):
    """`X | None` -> X, so a path goes through optional tables."""
    if isinstance(t, mi.UnionType):
        rest = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return t
