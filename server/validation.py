"""Input types shared by the schemas: text PostgreSQL can store, ids it can hold."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, Field

MAX_ID = 2**63 - 1  # PostgreSQL bigint


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string without NUL (PostgreSQL text cannot store it)."""

BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]


BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_JOINERS = frozenset("\u200c\u200d")  # ZWNJ and ZWJ: needed by scripts and emoji sequences
MAX_DISPLAY_NAME = 80


def _display_name(value: str) -> str:
    """NFKC, trimmed; not blank; no control, bidi-control or other invisible format characters
    (a name is shown to other people: it must not disguise itself or reorder what follows)."""
    name = unicodedata.normalize("NFKC", value).strip()
    if not name:
        raise ValueError("must not be blank")
    if len(name) > MAX_DISPLAY_NAME:
        raise ValueError(f"must have at most {MAX_DISPLAY_NAME} characters")
    for char in name:
        category = unicodedata.category(char)
        if char in BIDI_CONTROLS:
            raise ValueError("must not contain bidirectional control characters")
        if category in ("Cc", "Zl", "Zp") or (
            category == "Cf" and char not in _JOINERS and not "\U000e0020" <= char <= "\U000e007f"
        ):
            raise ValueError("must not contain control or invisible format characters")
    return name


DisplayName = Annotated[
    str, Field(min_length=1, max_length=4 * MAX_DISPLAY_NAME), AfterValidator(_display_name)
]
"""A display name as people will see it (normalised; 1..80 characters once normalised)."""
