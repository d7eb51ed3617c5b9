"""Input types shared by the schemas: text PostgreSQL can store, ids it can hold."""

from __future__ import annotations

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
