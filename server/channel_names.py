"""Channel names of the carpooling domain (PROTOCOL.md section 3)."""

from __future__ import annotations

RIDES_BOARD = "rides"


def user(user_id: int) -> str:
    return f"user:{user_id}"


def ride(ride_id: int) -> str:
    return f"ride:{ride_id}"


def chat(ride_id: int) -> str:
    return f"ride:{ride_id}:chat"


STATS = "stats"
"""Live statistics for administrators (server/stats/feed.py)."""
