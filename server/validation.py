"""Input types shared by the schemas: text PostgreSQL can store, ids it can hold."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, Field

MAX_ID = 2**63 - 1  # PostgreSQL bigint


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string PostgreSQL can store: no NUL, no lone surrogate (`"\\ud800"` in JSON)."""

# Instants are stored and compared in UTC. The calendar's edges with an offset
# (9999-12-31T23:59:59-14:00) are valid ISO 8601 but have no UTC form in Python or asyncpg.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_ADVANCE = timedelta(days=36525)
"""How far ahead a ride may depart (docs/api.md)."""


def instant(value: datetime) -> datetime:
    """An aware datetime in [EARLIEST, LATEST), as UTC; ValueError otherwise."""
    if value.utcoffset() is None:
        raise ValueError("must carry a UTC offset")
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("is out of range") from exc
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year}")
    return utc


def parse_instant(text: object) -> datetime:
    """`instant` of an ISO 8601 string with an offset (cursors); ValueError otherwise."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("not an ISO 8601 instant")
    return instant(datetime.fromisoformat(text))


Instant = Annotated[AwareDatetime, AfterValidator(instant)]
"""An aware datetime PostgreSQL and Python can both hold in UTC (normalised to UTC)."""

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
