"""Account rules: registration, login with rate limits, refresh rotation with reuse detection."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import RefreshToken, User
from server.auth.passwords import Passwords
from server.auth.schemas import RegisterIn, TokenPair
from server.auth.tickets import Ticket, TicketStore
from server.auth.tokens import InvalidToken, TokenClaims, TokenCodec
from server.config import Settings
from server.errors import Conflict, RateLimited, Unauthorized
from server.ratelimit import Counter
from server.users import repository as users


class AuthService:
    """Built once per app; request-scoped state (the session) is passed to each call."""

    def __init__(
        self,
        settings: Settings,
        codec: TokenCodec,
        passwords: Passwords,
        counter: Counter,
        tickets: TicketStore,
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.passwords = passwords
        self.counter = counter
        self.tickets = tickets

    async def register(self, session: AsyncSession, data: RegisterIn) -> User:
        if await users.by_email(session, data.email) is not None:
            raise Conflict("An account with this email already exists")
        user = User(
            email=data.email.lower(),
            password_hash=await self.passwords.hash(data.password),
            display_name=data.display_name,
            phone=data.phone,
        )
        session.add(user)
        try:
            await session.commit()
        except IntegrityError as exc:  # a concurrent registration won the race
            await session.rollback()
            raise Conflict("An account with this email already exists") from exc
        await session.refresh(user)
        return user

    async def check_ip(self, ip: str) -> None:
        s = self.settings
        hits, ttl = await self.counter.incr(f"ip:{ip}", s.auth_ip_window_s)
        if hits > s.auth_requests_per_ip:
            raise RateLimited(ttl, "Too many authentication requests from this address")

    async def login(self, session: AsyncSession, email: str, password: str) -> TokenPair:
        key = f"login:{email.strip().lower()}"
        failures, ttl = await self.counter.peek(key)
        if failures >= self.settings.login_failures_per_email:
            raise RateLimited(ttl, "Too many failed logins for this account; try again later")
        user = await users.by_email(session, email.strip())
        if not await self.passwords.verify(password, user.password_hash if user else None):
            await self.counter.incr(key, self.settings.login_failure_window_s)
            raise Unauthorized("Incorrect email or password")
        assert user is not None
        await self.counter.reset(key)
        return await self._new_pair(session, user.id, family_id=None)

    async def refresh(self, session: AsyncSession, token: str) -> TokenPair:
        claims = self._decode_refresh(token)
        row = await session.get(RefreshToken, claims.jti, with_for_update=True)
        if row is None:
            raise Unauthorized("Unknown refresh token")
        if row.used_at is not None or row.revoked_at is not None:
            await self._revoke_family(session, row)
            await session.commit()
            raise Unauthorized("Refresh token already used; this session has been revoked")
        row.used_at = datetime.now(UTC)
        return await self._new_pair(session, row.user_id, family_id=row.family_id)

    async def logout(self, session: AsyncSession, token: str) -> None:
        claims = self._decode_refresh(token)
        row = await session.get(RefreshToken, claims.jti, with_for_update=True)
        if row is not None:
            await self._revoke_family(session, row)
            await session.commit()

    async def ws_ticket(self, claims: TokenClaims) -> tuple[str, int]:
        ttl = self.settings.ws_ticket_ttl_s
        ticket_id = await self.tickets.put(Ticket(claims.user_id, claims.expires_at), ttl)
        return ticket_id, ttl

    def _decode_refresh(self, token: str) -> TokenClaims:
        try:
            return self.codec.decode(token, "refresh")
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from exc

    async def _revoke_family(self, session: AsyncSession, row: RefreshToken) -> None:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

    async def _new_pair(
        self, session: AsyncSession, user_id: int, family_id: uuid.UUID | None
    ) -> TokenPair:
        access = self.codec.issue(user_id, "access")
        refresh = self.codec.issue(user_id, "refresh")
        session.add(
            RefreshToken(
                jti=refresh.claims.jti,
                family_id=family_id or refresh.claims.jti,
                user_id=user_id,
                expires_at=refresh.claims.expires_at,
            )
        )
        await session.commit()
        return TokenPair(
            access_token=access.token,
            refresh_token=refresh.token,
            expires_in=self.settings.access_token_ttl_s,
        )

    async def account(self, session: AsyncSession, claims: TokenClaims) -> User:
        """The account behind a verified access token."""
        user = await users.get(session, claims.user_id)
        if user is None:
            raise Unauthorized("Account no longer exists")
        return user


__all__ = ["AuthService"]
