"""The statistics object, as REST answers it and the `stats` channel carries it."""

from __future__ import annotations

from pydantic import BaseModel


class Route(BaseModel):
    origin: str
    destination: str
    rides: int


class Stats(BaseModel):
    """Counts of the UTC day so far and of what is connected now, across every instance."""

    sockets_open: int
    users_online: int
    rides_published_today: int
    seats_booked_today: int
    messages_today: int
    busiest_routes: list[Route]
    instances: int
