"""The yardstick for Kuda's REST hot path: a minimal FastAPI + SQLAlchemy async app doing the
same work as Kuda's routes, on Kuda's own tables, the way a small team would first write it:
verify the JWT, one session per request, the query, a dict back (FastAPI's default JSON).

    DATABASE_URL=... REDIS_URL=... JWT_SECRET=... uvicorn --app-dir bench/rest minimal_app:app

Routes: GET /api/v1/users/me, GET /api/v1/rides (origin/destination substring, the default
listing), GET /api/v1/rides/{id}, POST /api/v1/rides (insert, then publish the ride on the live
board channel in Redis, as Kuda does).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from jose import JWTError, jwt
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from models import Ride, User

url = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
engine = create_async_engine(url, pool_size=20, max_overflow=5)
Session = async_sessionmaker(engine, expire_on_commit=False)
redis = Redis.from_url(os.environ["REDIS_URL"])
BOARD = os.environ.get("REDIS_PREFIX", "kuda:") + "ch:rides"
SECRET = os.environ["JWT_SECRET"]
app = FastAPI()


async def session() -> Any:
    async with Session() as s:
        yield s


def user_id(authorization: Annotated[str, Header()]) -> int:
    try:
        claims = jwt.decode(authorization.removeprefix("Bearer "), SECRET, algorithms=["HS256"])
    except JWTError as exc:
        raise HTTPException(401) from exc
    return int(claims["sub"])


Db = Annotated[AsyncSession, Depends(session)]
Me = Annotated[int, Depends(user_id)]


def ride_dict(r: Ride, d: User) -> dict[str, Any]:
    return {
        "id": r.id,
        "driver_id": r.driver_id,
        "origin": r.origin,
        "destination": r.destination,
        "departure_at": r.departure_at,
        "seats_total": r.seats_total,
        "seats_available": r.seats_available,
        "price": r.price,
        "currency": r.currency,
        "status": r.status,
        "notes": r.notes,
        "version": r.version,
        "driver": {"id": d.id, "display_name": d.display_name, "rating_count": d.rating_count},
    }


@app.get("/api/v1/users/me")
async def me(uid: Me, db: Db) -> dict[str, Any]:
    u = await db.get(User, uid)
    if u is None:
        raise HTTPException(404)
    return {"id": u.id, "email": u.email, "display_name": u.display_name, "bio": u.bio}


@app.get("/api/v1/rides")
async def search(uid: Me, db: Db, origin: str | None = None, destination: str | None = None) -> Any:
    q = (
        select(Ride, User)
        .join(User, User.id == Ride.driver_id)
        .where(Ride.status == "scheduled", Ride.departure_at >= datetime.now(UTC))
    )
    if origin:
        q = q.where(func.lower(Ride.origin).contains(origin.lower(), autoescape=True))
    if destination:
        q = q.where(func.lower(Ride.destination).contains(destination.lower(), autoescape=True))
    rows = (await db.execute(q.order_by(Ride.departure_at, Ride.id).limit(21))).all()
    return {"items": [ride_dict(r, d) for r, d in rows[:20]]}


@app.get("/api/v1/rides/{ride_id}")
async def ride(ride_id: int, uid: Me, db: Db) -> dict[str, Any]:
    row = (await db.execute(select(Ride, User).join(User).where(Ride.id == ride_id))).first()
    if row is None:
        raise HTTPException(404)
    return ride_dict(*row)


class RideIn(BaseModel):
    origin: str
    destination: str
    departure_at: datetime
    seats_total: int
    price: float | None = None


@app.post("/api/v1/rides", status_code=201)
async def create(data: RideIn, uid: Me, db: Db) -> dict[str, Any]:
    driver = await db.get(User, uid)
    assert driver is not None
    r = Ride(driver_id=uid, seats_available=data.seats_total, **data.model_dump())
    db.add(r)
    await db.flush()
    await db.refresh(r)
    await db.commit()
    view = ride_dict(r, driver)
    await redis.publish(BOARD, json.dumps(view, default=str))
    return view
