"""Reading a suite file: YAML (duplicate keys refused) and one-line messages for schema errors that
name the place in the file."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from promptreg.errors import InputError
from promptreg.fingerprints.dataset import read_utf8

# --------------------------------------------------------------------------------------------------
# errors


def _loc(parts: typing.Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(root: type[BaseModel], parts: tuple[Any, ...]) -> type[BaseModel] | None:
    tp: Any = root
    for part in parts:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            f = tp.model_fields.get(part) if isinstance(part, str) else None
            if f is None:
                return None
            tp = f.annotation
        elif typing.get_origin(tp) is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict and isinstance(part, str):
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _validation_message(exc: ValidationError, root: type[BaseModel], prefix: tuple[Any, ...]) -> str:
    # a misspelt key gives "unknown key" and "missing required key": report the unknown one first
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    err = errors[0]
    loc = tuple(err.get("loc", ()))
    kind = err.get("type")
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model is not None else ""
        msg = f"unknown key {loc[-1]!r}{allowed}"
    elif kind == "missing":
        msg = "missing required key"
    elif kind == "string_pattern_mismatch" and loc and loc[-1] == "name":
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        msg = f"invalid name {shown}: use 1 to 64 letters, digits, '.', '_' or '-'"
    elif kind == "too_short":
        msg = "must not be empty"
    elif kind == "string_type" and isinstance(err.get("input"), bool):
        msg = (f"Input should be a valid string, got {err.get('input')!r} (YAML reads unquoted yes/no/true/false/"
               "on/off as booleans: quote the value)")
    elif kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err.get("msg")))
    else:
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f", got {got!r}"[:120]
        msg = f"{err.get('msg')}{shown}"
    more = len(errors) - 1
    where = _loc(prefix + loc)
    return (f"{where}: " if where else "") + msg + (f" (+{more} more problem{'s' * (more > 1)})" if more else "")


class _SuiteError(Exception):
    def __init__(self, loc: tuple[Any, ...] | str, msg: str) -> None:
        super().__init__(msg)
        self.loc = loc if isinstance(loc, str) else _loc(loc)
        self.msg = msg


# --------------------------------------------------------------------------------------------------
# YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (plain safe_load keeps the last one silently)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:
            continue  # unhashable: construct_mapping reports it
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    text = read_utf8(path, missing="{path}: suite file not found", folder="{path}: is a folder, not a suite file",
                     undecodable="{path}: not valid UTF-8 (byte {byte})",
                     unreadable="{path}: cannot read the suite file: {reason}")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        raise InputError(f"{path}: {where}invalid YAML ({problem})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise InputError(f"{path}: invalid YAML (nested too deeply)") from None
