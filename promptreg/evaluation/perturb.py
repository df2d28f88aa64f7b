"""Text perturbations for behavioural checks (invariance and directional checks of a regression suite).

A perturbation turns one text into another, or says it does not apply to that text (``None``). It is
deterministic: the random choices it makes come from ``random.Random(rng_key)`` (a string key, e.g.
``"<seed>:<row index>"``; Python seeds a string key through SHA-512, so the result does not depend on the
process or ``PYTHONHASHSEED``), never from the global ``random`` state. A perturbation whose result
equals its input does not apply either (``None``): a case that changes nothing tests nothing.

Built-in perturbations (by name):

``typos`` (parameter ``count``, default 1)
    In ``count`` different words, chosen at random among the words that qualify, swap two adjacent
    letters inside the word (the first and the last letter stay in place). A word is a maximal run of
    letters; it qualifies when it has at least 4 letters and two different adjacent inner letters
    ("wonderful" -> "wodnerful"). With fewer qualifying words than ``count``, all of them are changed;
    with none, the perturbation does not apply.
``names``
    Replace a common first name (a built-in list of 64 names, :data:`FIRST_NAMES`; whole word,
    case-sensitive, so "Mary" matches but "mary" and "Maryland" do not) with another name from the list
    that does not occur in the text. With several names in the text, one is chosen at random; every
    occurrence of the chosen name is replaced. No name in the text: does not apply.
``punctuation``
    If the text (trailing whitespace ignored) ends with ``.``, ``!`` or ``?``, strip that run of trailing
    punctuation (``"Great!!"`` -> ``"Great"``); otherwise append ``"."``. Nothing inside the text changes.
    A text made only of such punctuation does not apply.
``add_negation``
    Append a negative clause chosen at random from :data:`NEGATION_CLAUSES` (e.g. ``" But overall, I did
    not like it."``). A text that does not end with ``.``, ``!`` or ``?`` first gets a ``"."``.

Mapping forms (exactly one key):

``{suffix: [phrase, ...]}`` / ``{prefix: [phrase, ...]}``
    Append / prepend one phrase chosen at random. A space is put between the text and the phrase unless
    one of them already has whitespace at the junction.
``{replace: {word: replacement, ...}}``
    Whole-word, case-sensitive replacements, all applied in one pass (so ``{good: bad, bad: good}``
    swaps the two words); a key may be several words (``"not bad"``), longer keys win. No key occurs
    in the text: does not apply. Deterministic (no random choice).
``{typos: {count: 2}}``
    A built-in with parameters. ``{names: {}}``, ``{punctuation: {}}`` and ``{add_negation: {}}`` (or
    ``null`` parameters) are the same as the plain names.

:func:`get_perturbation` turns a spec (a name or a mapping, as written in a suite) into a
:class:`Perturbation`; every problem is an :class:`~promptreg.errors.InputError` with a one-line
message (without location: the suite loader prefixes the file and the place).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from promptreg.errors import InputError

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Sandra", "Donald", "Ashley",
    "Steven", "Kimberly", "Paul", "Emily", "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Carol",
    "Kevin", "Amanda", "Brian", "Melissa", "George", "Deborah", "Timothy", "Stephanie", "Ronald",
    "Rebecca", "Jason", "Laura", "Jeffrey", "Sharon", "Ryan", "Cynthia", "Jacob", "Kathleen", "Gary",
    "Amy", "Nicholas", "Angela", "Eric", "Anna",
)

NEGATION_CLAUSES: tuple[str, ...] = (
    " But overall, I did not like it.",
    " Honestly, it was not good.",
    " Still, I would not recommend it.",
    " In the end, it did not work for me.",
    " Sadly, it was not worth it.",
    " Overall, I was not impressed.",
)

_END_PUNCT = ".!?"
_WORD = re.compile(r"[^\W\d_]+")  # a maximal run of letters (Unicode)
_NAMES_RE = re.compile(r"(?<!\w)(" + "|".join(FIRST_NAMES) + r")(?!\w)")


class Perturbation:
    """A named, deterministic text perturbation. ``apply(text, rng_key)`` returns the perturbed text, or
    ``None`` when the perturbation does not apply to ``text`` (including when it would change nothing)."""

    name: str = "perturbation"

    def apply(self, text: str, rng_key: str) -> str | None:
        out = self._apply(text, random.Random(rng_key))
        return None if out is None or out == text else out

    def _apply(self, text: str, rng: random.Random) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Perturbation {self.name}>"


class Typos(Perturbation):
    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.name = "typos" if count == 1 else f"typos(count={count})"

    @staticmethod
    def _swappable(word: str) -> list[int]:
        # inner adjacent pairs (i, i+1) with 1 <= i and i+1 <= len-2 whose letters differ
        return [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]

    def _apply(self, text: str, rng: random.Random) -> str | None:
        words = [m for m in _WORD.finditer(text) if len(m.group()) >= 4 and self._swappable(m.group())]
        if not words:
            return None
        chosen = sorted(rng.sample(range(len(words)), min(self.count, len(words))))
        out, pos = [], 0
        for k in chosen:
            m = words[k]
            w = m.group()
            i = rng.choice(self._swappable(w))
            out.append(text[pos:m.start()])
            out.append(w[:i] + w[i + 1] + w[i] + w[i + 2:])
            pos = m.end()
        out.append(text[pos:])
        return "".join(out)


class Names(Perturbation):
    name = "names"

    def _apply(self, text: str, rng: random.Random) -> str | None:
        present = sorted({m.group() for m in _NAMES_RE.finditer(text)}, key=FIRST_NAMES.index)
        if not present:
            return None
        old = rng.choice(present)
        new = rng.choice([n for n in FIRST_NAMES if n not in present])
        return re.sub(r"(?<!\w)" + old + r"(?!\w)", new, text)


class Punctuation(Perturbation):
    name = "punctuation"

    def _apply(self, text: str, rng: random.Random) -> str | None:
        body = text.rstrip()
        if body and body[-1] in _END_PUNCT:
            body = body.rstrip(_END_PUNCT).rstrip()
            return body or None
        return body + "." if body else None


def _ensure_sentence_end(text: str) -> str:
    body = text.rstrip()
    return body if not body or body[-1] in _END_PUNCT else body + "."


class AddNegation(Perturbation):
    name = "add_negation"

    def _apply(self, text: str, rng: random.Random) -> str | None:
        return _ensure_sentence_end(text) + rng.choice(NEGATION_CLAUSES)


def _join(left: str, right: str) -> str:
    if not left or not right or left[-1].isspace() or right[0].isspace():
        return left + right
    return left + " " + right


class Affix(Perturbation):
    def __init__(self, kind: str, phrases: list[str]) -> None:
        self.kind = kind  # suffix | prefix
        self.phrases = list(phrases)
        self.name = kind

    def _apply(self, text: str, rng: random.Random) -> str | None:
        phrase = rng.choice(self.phrases)
        return _join(text, phrase) if self.kind == "suffix" else _join(phrase, text)


class Replace(Perturbation):
    name = "replace"

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self.mapping = dict(mapping)
        keys = sorted(self.mapping, key=lambda k: (-len(k), k))
        self._re = re.compile(r"(?<!\w)(" + "|".join(re.escape(k) for k in keys) + r")(?!\w)")

    def _apply(self, text: str, rng: random.Random) -> str | None:
        out, n = self._re.subn(lambda m: self.mapping[m.group()], text)
        return out if n else None


BUILTINS = ("typos", "names", "punctuation", "add_negation")
MAPPING_FORMS = ("suffix", "prefix", "replace")


def _known() -> str:
    return ", ".join(BUILTINS) + "; or a mapping {suffix: [...]}, {prefix: [...]}, {replace: {...}}, " \
        "{typos: {count: N}}"


def _builtin(name: str, params: Any) -> Perturbation:
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InputError(f"parameters of perturbation {name!r} must be a mapping, got {type(params).__name__}")
    allowed = ("count",) if name == "typos" else ()
    unknown = [k for k in params if k not in allowed]
    if unknown:
        extra = f" (allowed: {', '.join(allowed)})" if allowed else " (it takes no parameters)"
        raise InputError(f"unknown parameter {unknown[0]!r} for perturbation {name!r}{extra}")
    if name == "typos":
        count = params.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InputError(f"typos count must be an integer >= 1, got {count!r}")
        return Typos(count)
    return {"names": Names, "punctuation": Punctuation, "add_negation": AddNegation}[name]()


def get_perturbation(spec: str | Mapping[str, Any]) -> Perturbation:
    """The perturbation a suite's ``perturbation:`` value names (see the module docstring)."""
    if isinstance(spec, str):
        if spec not in BUILTINS:
            raise InputError(f"unknown perturbation {spec!r} (known: {_known()})")
        return _builtin(spec, None)
    if not isinstance(spec, Mapping):
        raise InputError(f"a perturbation is a name or a mapping, got {type(spec).__name__} (known: {_known()})")
    if len(spec) != 1:
        keys = ", ".join(repr(k) for k in spec) or "none"
        raise InputError(f"a perturbation mapping must have exactly one key, got {keys} (known: {_known()})")
    ((kind, value),) = spec.items()
    if kind in BUILTINS:
        return _builtin(kind, value)
    if kind in ("suffix", "prefix"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise InputError(f"{kind} must be a non-empty list of phrases")
        bad = [v for v in value if not isinstance(v, str) or not v.strip()]
        if bad:
            raise InputError(f"{kind} phrases must be non-empty strings, got {bad[0]!r}")
        return Affix(kind, value)
    if kind == "replace":
        if not isinstance(value, Mapping) or not value:
            raise InputError("replace must be a non-empty mapping word -> replacement")
        for k, v in value.items():
            if not isinstance(k, str) or not k.strip() or k != k.strip():
                raise InputError(f"replace keys must be non-empty words without surrounding spaces, got {k!r}")
            if not isinstance(v, str):
                raise InputError(f"replace value for {k!r} must be a string, got {type(v).__name__} {v!r}")
        return Replace(value)
    raise InputError(f"unknown perturbation {kind!r} (known: {_known()})")
