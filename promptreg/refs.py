"""Names and references: ``NAME``, ``NAME:VERSION``, ``NAME@ALIAS``.

One grammar, one parser: a positional ref goes through :func:`parse_ref`; every option that names a
version of a prompt already named elsewhere on the command line (``gate --against``, ``eval --against``,
``rollback --to`` ...) goes through :func:`parse_version_ref`, which accepts the same ``NAME:V`` and
``NAME@ALIAS`` forms plus a bare version number or a bare alias (the name is implied) and refuses a ref
to another prompt. Both raise the same one-line :class:`InputError` messages.

Names are restricted so they are safe as path components, S3 keys and MLflow registered-model
names: letters, digits, ``.``, ``_``, ``-``; starting with a letter or digit; at most 128 chars.
Aliases follow MLflow's rules (``latest`` and ``v<digits>`` are reserved there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptreg.errors import InputError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_RESERVED_ALIAS = re.compile(r"latest|v\d+")
MAX_VERSION = 2**31 - 1  # version numbers are 32-bit integers in the registry database


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InputError(
            f"invalid prompt name {name!r}: use letters, digits, '.', '_' or '-', starting with a letter "
            "or digit, at most 128 characters"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or _RESERVED_ALIAS.fullmatch(alias):
        raise InputError(
            f"invalid alias {alias!r}: use lowercase letters, digits, '_' or '-', starting with a letter "
            "(not 'latest' or 'v<number>')"
        )
    return alias


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (the database and MLflow refuse a NUL character and lone
    surrogates, which undecodable bytes on a command line become), or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text (an unpaired surrogate)"
    return None


def check_text(value: str | None, what: str) -> str | None:
    """Free text stored in the registry (a description, a reason): refuse what :func:`text_problem` finds."""
    if value is not None and (problem := text_problem(value)):
        raise InputError(f"the {what} {problem}: {value[:60]!r}")
    return value


@dataclass(frozen=True)
class Ref:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def _version(text: str, whole: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise InputError(f"invalid version in {whole!r}: expected a positive integer (at most {MAX_VERSION})")
    return int(text)


def parse_ref(text: str) -> Ref:
    """Parse ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS`` (InputError when malformed)."""
    if not isinstance(text, str) or not text:
        raise InputError("empty reference: expected NAME, NAME:VERSION or NAME@ALIAS")
    if "@" in text:
        name, alias = text.split("@", 1)
        return Ref(check_name(name), alias=check_alias(alias))
    if ":" in text:
        name, version = text.split(":", 1)
        return Ref(check_name(name), version=_version(version, text))
    return Ref(check_name(text))


def parse_version_ref(text: str, name: str, *, what: str = "version") -> Ref:
    """A version of prompt ``name``: ``NAME:V``, ``NAME@ALIAS``, a bare ``V`` or a bare ``ALIAS``.

    The result always has a version or an alias. ``what`` names the option in errors
    (e.g. ``'--against'``)."""
    if not isinstance(text, str) or not text:
        raise InputError(f"empty {what}: expected VERSION, ALIAS, {name}:VERSION or {name}@ALIAS")
    if "@" in text or ":" in text:
        ref = parse_ref(text)
        if ref.name != name:
            raise InputError(f"{what} {text!r} names prompt {ref.name!r}, not {name!r}")
        return ref
    if text.isascii() and text.isdigit():
        return Ref(name, version=_version(text, text))
    return Ref(name, alias=check_alias(text))


def check_page(limit: int | None, offset: int) -> None:
    """A page request (``--limit``/``--offset``): ``limit`` None (all) or >= 1, ``offset`` >= 0."""
    if limit is not None and limit < 1 or offset < 0:
        raise InputError("--limit must be at least 1 and --offset at least 0")
