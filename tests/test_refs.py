"""The one ref grammar: positional refs (parse_ref) and version options (parse_version_ref) accept the
same forms and refuse with the same one-line messages. Pure: no database, no model."""

from __future__ import annotations

import pytest

from promptreg.errors import InputError
from promptreg.refs import MAX_VERSION, Ref, parse_ref, parse_version_ref


@pytest.mark.parametrize("text, expected", [
    ("qa-bot:1", Ref("qa-bot", version=1)),
    ("qa-bot@production", Ref("qa-bot", alias="production")),
    ("1", Ref("qa-bot", version=1)),
    ("12", Ref("qa-bot", version=12)),
    ("staging", Ref("qa-bot", alias="staging")),
])
def test_version_option_accepts_every_form(text, expected):
    assert parse_version_ref(text, "qa-bot") == expected


def test_option_forms_equal_positional_forms():
    for text in ("qa-bot:3", "qa-bot@canary"):
        assert parse_version_ref(text, "qa-bot") == parse_ref(text)


@pytest.mark.parametrize("text, message", [
    ("qa-bot:0", "invalid version in 'qa-bot:0'"),
    (f"qa-bot:{MAX_VERSION + 1}", "invalid version"),
    ("qa-bot:x", "invalid version in 'qa-bot:x'"),
    ("qa-bot@Prod", "invalid alias 'Prod'"),
    ("qa-bot@latest", "invalid alias 'latest'"),
    ("Prod", "invalid alias 'Prod'"),
    ("v2", "invalid alias 'v2'"),
    ("0", "invalid version in '0'"),
    ("²", "invalid alias '²'"),
    ("other:1", "--against 'other:1' names prompt 'other', not 'qa-bot'"),
    ("other@production", "names prompt 'other'"),
    ("", "empty --against"),
])
def test_version_option_errors(text, message):
    with pytest.raises(InputError, match=None) as exc:
        parse_version_ref(text, "qa-bot", what="--against")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_same_message_as_positional_ref():
    for bad in ("qa-bot:0", "qa-bot@Bad"):
        with pytest.raises(InputError) as positional:
            parse_ref(bad)
        with pytest.raises(InputError) as option:
            parse_version_ref(bad, "qa-bot")
        assert str(positional.value) == str(option.value)


def test_there_is_one_parser():
    """No module outside refs.py splits a ref on ':' or '@' itself or parses a version from an option."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "promptreg"
    suspicious = re.compile(r"""(against|\bto)\.(isdigit|split\(["'][:@])""")
    offenders = [str(p) for p in root.rglob("*.py") if p.name != "refs.py" and suspicious.search(p.read_text())]
    assert offenders == []
