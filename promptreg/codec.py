"""Result objects on the wire: one generic encoding of the API's dataclasses and its inverse.

``encode(obj)`` turns a result (a dataclass, nested dataclasses, lists, dicts, paths, datetimes) into
JSON-ready data holding exactly its fields; ``decode(cls, data)`` rebuilds the same dataclass from
it, guided by the class's type hints. The server answers with ``encode(result)``, the remote client
returns ``decode(ReturnType, answer)``: a caller gets the same typed object in remote mode as in
direct mode, and the CLI prints it with the same ``to_dict()``.

Invariants: ``decode(type(x), encode(x)) == x`` for every result dataclass of the API (tested);
computed properties are never sent (they are recomputed); unknown keys are ignored (an older client
talking to a newer server), missing fields take their defaults.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import sys
import types
import typing
from pathlib import PurePath
from typing import Any


def encode(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(encode(v) for v in obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass; a hint that cannot be resolved (a name imported only
    for type checking) is Any: its value is passed through as it came."""
    module = sys.modules.get(cls.__module__)
    ns = dict(vars(module)) if module else {}
    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, hint in getattr(klass, "__annotations__", {}).items():
            if isinstance(hint, str):
                try:
                    hint = eval(hint, ns, dict(vars(klass)))  # noqa: S307 - our own annotations
                except Exception:  # noqa: BLE001
                    hint = Any
            out[name] = hint
    return out


def decode(tp: Any, data: Any) -> Any:
    if data is None or tp is Any:
        return data
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if dataclasses.is_dataclass(a) and isinstance(data, dict):
                return decode(a, data)
        return decode(args[0], data) if len(args) == 1 else data
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        args = typing.get_args(tp)
        items = [decode(args[0] if args else Any, v) for v in data]
        return tuple(items) if origin is tuple else set(items) if origin in (set, frozenset) else items
    if origin is dict:
        args = typing.get_args(tp)
        return {k: decode(args[1] if len(args) == 2 else Any, v) for k, v in data.items()}
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            init, later = {}, {}
            for f in dataclasses.fields(tp):
                if f.name in data:
                    (init if f.init else later)[f.name] = decode(hints.get(f.name, Any), data[f.name])
            obj = tp(**init)
            for name, value in later.items():
                object.__setattr__(obj, name, value)
            return obj
        if issubclass(tp, PurePath):
            return tp(data)
        if tp is dt.datetime:
            return dt.datetime.fromisoformat(data)
        if issubclass(tp, enum.Enum):
            return tp(data)
        if tp is float and isinstance(data, int):
            return float(data)
    return data


__all__ = ["decode", "encode"]
