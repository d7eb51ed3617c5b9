"""Administrative tasks behind the CLI: create an admin, seed demo data."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import User
from server.auth.passwords import Passwords
from server.config import Settings
from server.db import create_engine, create_sessionmaker
from server.seed import SeedResult, seed
from server.users import repository


async def create_admin(settings: Settings, email: str, name: str, password: str) -> bool:
    """Create the user as an administrator, or promote an existing one. True if changed."""
    engine = create_engine(settings, serving=False)
    try:
        maker: async_sessionmaker[AsyncSession] = create_sessionmaker(engine)
        async with maker() as session:
            user = await repository.by_email(session, email)
            if user is not None and user.is_admin:
                return False
            if user is None:
                hashed = await Passwords(settings).hash(password)
                user = User(email=email.lower(), password_hash=hashed, display_name=name)
                session.add(user)
            user.is_admin = True
            await session.commit()
            return True
    finally:
        await engine.dispose()


async def seed_demo(
    settings: Settings, users: int, rides: int, days: int, random_seed: int
) -> SeedResult:
    engine = create_engine(settings, serving=False)
    try:
        return await seed(
            create_sessionmaker(engine),
            Passwords(settings),
            users=users,
            rides=rides,
            days=days,
            random_seed=random_seed,
        )
    finally:
        await engine.dispose()
