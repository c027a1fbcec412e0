"""Client names as the consent page shows them: normalised, never deceiving.

Registration (RFC 7591) and metadata documents both hold ``client_name`` to
these rules, so a name reads the same whichever way the client arrived.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from authlib.oauth2.rfc7591.errors import InvalidClientMetadataError
from confusable_homoglyphs import categories as confusable_categories

DEFAULT_CLIENT_NAME = "MCP Client"
MAX_CLIENT_NAME_LENGTH = 200
#: Invisible or non-text: controls, formats (bidi overrides), surrogates,
#: private use, unassigned, line and paragraph separators.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: Letters and marks that render blank: Unicode's Default_Ignorable_Code_Point
#: outside the C categories (Hangul fillers, variation selectors ...), the
#: Braille blank and the musical null notehead.
BLANK_CHARACTERS = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, 0x1D159}
    | set(range(0x180B, 0x1810))
    | set(range(0xFE00, 0xFE10))
    | set(range(0xE0100, 0xE01F0))
)
#: Combining marks one letter may carry: Hebrew points with a cantillation
#: mark or a Tibetan stack need four; more is "Zalgo" text.
MAX_COMBINING_RUN = 4
#: Script values any word may contain (digits, punctuation, combining marks).
SHARED_SCRIPTS = frozenset({"COMMON", "INHERITED"})
#: Scripts one word may combine: UTS #39 §5.2, "Highly Restrictive".
SCRIPT_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


def client_name(data: dict[str, Any]) -> str:
    """The name the consent page will show, normalised; raise if it deceives.

    UTS #39 §5 and UAX #15: compatibility look-alikes (full-width
    ``ＣＬＡＵＤＥ``, mathematical ``𝐂𝐥𝐚𝐮𝐝𝐞``) are folded by NFKC, every run
    of spaces (no-break, ideographic, figure ...) becomes one space, and the
    result is what is judged, stored and shown.
    """
    name = data.get("client_name")
    if name is None or (isinstance(name, str) and not name.strip()):
        return DEFAULT_CLIENT_NAME
    if not isinstance(name, str) or len(name) > MAX_CLIENT_NAME_LENGTH:
        raise _name_error(
            f"must be a string of at most {MAX_CLIENT_NAME_LENGTH} characters"
        )
    if any(_hidden(c) for c in name):
        raise _name_error("must not contain invisible or formatting characters")
    name = " ".join(unicodedata.normalize("NFKC", name).split())
    if not name:
        return DEFAULT_CLIENT_NAME
    if len(name) > MAX_CLIENT_NAME_LENGTH or any(_hidden(c) for c in name):
        raise _name_error("must not expand into hidden or overlong text")
    if any(_marks_deceive(word) for word in name.split()):
        raise _name_error(
            "must not contain marks that strike through, enclose or pile up on letters"
        )
    if any(_mixes_scripts(word) for word in name.split()):
        raise _name_error("must not mix look-alike scripts within a word")
    return name


def _name_error(problem: str) -> InvalidClientMetadataError:
    return InvalidClientMetadataError(f"'client_name' {problem}.")


def _marks_deceive(word: str) -> bool:
    """True if combining marks could make ``word`` read as other text.

    Overlays (canonical combining class 1: U+0338 after ``Claude`` strikes
    the e through) and enclosing marks (category Me, such as U+20E0) draw
    across letters; a mark with no letter before it, or a pile of more than
    :data:`MAX_COMBINING_RUN`, spills over its neighbours on the page.
    """
    if unicodedata.category(word[0]).startswith("M"):
        return True  # a mark with no letter to sit on
    run = 0
    for char in word:
        category = unicodedata.category(char)
        run = run + 1 if category.startswith("M") else 0
        if category == "Me" or unicodedata.combining(char) == 1:
            return True
        if run > MAX_COMBINING_RUN:
            return True
    return False


def _hidden(char: str) -> bool:
    """True for characters that render as nothing or are not text at all."""
    return (
        unicodedata.category(char) in HIDDEN_CATEGORIES or ord(char) in BLANK_CHARACTERS
    )


def _mixes_scripts(word: str) -> bool:
    """True if one word mixes scripts beyond UTS #39's Highly Restrictive level."""
    scripts = {confusable_categories.alias(c) for c in word} - SHARED_SCRIPTS
    return len(scripts) > 1 and not any(scripts <= mix for mix in SCRIPT_MIXES)
