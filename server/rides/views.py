"""The ride as `GET /rides/{id}` shows it; events carry the same shape."""

from __future__ import annotations

from typing import Any

from channels.types import iso
from models import Ride, User


def point(lat: float | None, lng: float | None) -> dict[str, float] | None:
    return None if lat is None or lng is None else {"lat": lat, "lng": lng}


def driver_view(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.id,
        "display_name": user.display_name,
        "is_verified": user.is_verified,
        "rating_avg": user.rating_avg,
        "rating_count": user.rating_count,
    }


def ride_view(ride: Ride, driver: User | None) -> dict[str, Any]:
    """JSON-ready (times as RFC 3339 UTC strings, price as a number)."""
    return {
        "id": ride.id,
        "driver_id": ride.driver_id,
        "driver": driver_view(driver),
        "kind": ride.kind,
        "origin": ride.origin,
        "destination": ride.destination,
        "origin_point": point(ride.origin_lat, ride.origin_lng),
        "destination_point": point(ride.destination_lat, ride.destination_lng),
        "departure_at": iso(ride.departure_at),
        "seats_total": ride.seats_total,
        "seats_available": ride.seats_available,
        "price": float(ride.price) if ride.price is not None else None,
        "currency": ride.currency,
        "notes": ride.notes,
        "instant_booking": ride.instant_booking,
        "status": ride.status,
        "version": ride.version,
        "created_at": iso(ride.created_at),
        "updated_at": iso(ride.updated_at),
    }
