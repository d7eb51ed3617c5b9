"""Account rules: registration, login with its limits, refresh rotation with reuse detection,
sessions that end (logout, reuse, password change) everywhere.

No database connection is held while a password is hashed or verified (Argon2 takes tens of
milliseconds of CPU in a worker thread): the service opens short sessions around it itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import RefreshToken, User
from server.auth.attempts import LoginAttempts
from server.auth.passwords import Passwords
from server.auth.schemas import RegisterIn, TokenPair
from server.auth.sessions import EndedSessions, user_key
from server.auth.tickets import Ticket, TicketStore, TicketStoreUnavailable
from server.auth.tokens import InvalidToken, TokenClaims, TokenCodec
from server.config import Settings
from server.db import commit
from server.errors import Conflict, Forbidden, RateLimited, Unauthorized, Unavailable
from server.ratelimit import Counter

WRONG_CREDENTIALS = "Incorrect email or password"
TOO_MANY_FAILURES = "Too many failed logins for this account; try again later"


@dataclass(frozen=True, slots=True)
class Login:
    tokens: TokenPair
    device_token: str
    """Proves later that this device signed in to this account (docs/decisions.md D27)."""


@dataclass(frozen=True, slots=True)
class _Account:
    id: int
    password_hash: str


class AuthService:
    """Built once per app."""

    def __init__(
        self,
        settings: Settings,
        codec: TokenCodec,
        passwords: Passwords,
        counter: Counter,
        tickets: TicketStore,
        sessionmaker: async_sessionmaker[AsyncSession],
        autocommit: async_sessionmaker[AsyncSession],
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.passwords = passwords
        self.counter = counter
        self.tickets = tickets
        self._sessionmaker = sessionmaker
        self._autocommit = autocommit
        self.sessions = EndedSessions(settings, autocommit)
        self.attempts = LoginAttempts(
            autocommit, settings.login_failures_per_email, settings.login_failure_window_s
        )

    # Registration and login ---------------------------------------------------------------

    async def register(self, data: RegisterIn) -> User:
        password_hash = await self.passwords.hash(data.password)  # before any connection
        async with self._sessionmaker() as session:
            if await _account(session, data.email) is not None:
                raise Conflict("An account with this email already exists")
            user = User(
                email=data.email.lower(),
                password_hash=password_hash,
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

    async def login(self, email: str, password: str, device_token: str | None) -> Login:
        """At most LOGIN_FAILURES_PER_EMAIL wrong passwords are checked per email and window;
        a device that signed in to the account before has a window of its own, so a stranger
        exhausting the email's cannot lock its owner out (docs/decisions.md D27)."""
        address = email.strip().lower()
        async with self._autocommit() as session:
            account = await _account(session, address)
        device = self._known_device(device_token, account)
        bucket = f"device:{account.id}:{device}" if account and device else f"email:{address}"
        reservation = await self.attempts.reserve(bucket, TOO_MANY_FAILURES)
        hashed = account.password_hash if account else None
        if not await self.passwords.verify(password, hashed):
            raise Unauthorized(WRONG_CREDENTIALS)  # the slot stays taken: a wrong password
        assert account is not None
        await self.attempts.release(reservation, forget=device is not None)
        async with self._sessionmaker() as session:
            # The password checked must still be the account's (not changed, not deleted
            # meanwhile); the share lock orders this login against a password change.
            current = await session.scalar(
                select(User.password_hash)
                .where(User.id == account.id, User.deleted_at.is_(None))
                .with_for_update(read=True)
            )
            if current != account.password_hash:
                raise Unauthorized(WRONG_CREDENTIALS)
            tokens = await self._new_pair(session, account.id, family_id=None)
        device_id = device or uuid.uuid4()
        return Login(tokens, self.codec.issue(account.id, "device", jti=device_id).token)

    def _known_device(self, token: str | None, account: _Account | None) -> uuid.UUID | None:
        if not token or account is None:
            return None
        try:
            claims = self.codec.decode(token, "device")
        except InvalidToken:
            return None
        return claims.jti if claims.user_id == account.id else None

    # Refresh and logout --------------------------------------------------------------------

    async def refresh(self, session: AsyncSession, token: str) -> TokenPair:
        claims = self._decode_refresh(token)
        row = await session.get(RefreshToken, claims.jti, with_for_update=True)
        if row is None:
            raise Unauthorized("Unknown refresh token")
        if row.used_at is not None or row.revoked_at is not None:
            await self._end_family(session, row, "reuse")
            raise Unauthorized("Refresh token already used; this session has been revoked")
        # A family ended while this token was being rotated (its row was inserted after the
        # revoking UPDATE read the table) is refused here.
        if await self.sessions.ended_in_database(session, str(row.family_id)):
            raise Unauthorized("This session has ended; sign in again")
        row.used_at = datetime.now(UTC)
        return await self._new_pair(session, row.user_id, family_id=row.family_id)

    async def logout(self, session: AsyncSession, token: str) -> None:
        claims = self._decode_refresh(token)
        row = await session.get(RefreshToken, claims.jti, with_for_update=True)
        if row is not None:
            await self._end_family(session, row, "logout")

    async def _end_family(self, session: AsyncSession, row: RefreshToken, reason: str) -> None:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        await self.sessions.end(session, [str(row.family_id)], row.user_id, reason)
        await commit(session)

    # Password change and account removal ---------------------------------------------------

    async def verify_own_password(self, user_id: int, password: str) -> str:
        """Check the signed-in user's password (403 when wrong, 429 after too many wrong
        ones, as for logins). Returns the hash it was checked against."""
        async with self._autocommit() as session:
            hashed = await session.scalar(
                select(User.password_hash).where(User.id == user_id, User.deleted_at.is_(None))
            )
        if hashed is None:
            raise Unauthorized("Account no longer exists")
        reservation = await self.attempts.reserve(
            f"account:{user_id}", "Too many wrong passwords; try again later"
        )
        if not await self.passwords.verify(password, hashed):
            raise Forbidden("The password is not correct")
        await self.attempts.release(reservation)
        return hashed

    async def change_password(self, user_id: int, current: str, new: str) -> None:
        checked = await self.verify_own_password(user_id, current)
        new_hash = await self.passwords.hash(new)
        async with self._sessionmaker() as session:
            user = await self.lock_account(session, user_id, checked)
            user.password_hash = new_hash
            await self.end_all_sessions(session, user_id, "password")
            await commit(session)

    async def lock_account(self, session: AsyncSession, user_id: int, checked: str) -> User:
        """The account row, locked, provided its password is still the one just checked."""
        user = await session.get(User, user_id, with_for_update=True)
        if user is None or user.deleted_at is not None:
            raise Unauthorized("Account no longer exists")
        if user.password_hash != checked:
            raise Conflict("The password was changed meanwhile; try again")
        return user

    async def end_all_sessions(self, session: AsyncSession, user_id: int, reason: str) -> None:
        """Revoke every refresh token of the user and end every session whose access tokens
        may still be valid (the caller holds the account row lock, so no login slips in)."""
        since = datetime.now(UTC) - timedelta(seconds=self.settings.access_token_ttl_s + 60)
        families = await session.scalars(
            select(RefreshToken.family_id)
            .where(
                RefreshToken.user_id == user_id,
                (RefreshToken.revoked_at.is_(None)) | (RefreshToken.revoked_at > since),
            )
            .distinct()
        )
        keys = [str(f) for f in families] + [user_key(user_id)]
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        await self.sessions.end(session, keys, user_id, reason)

    # Tickets -------------------------------------------------------------------------------

    async def ws_ticket(self, claims: TokenClaims) -> tuple[str, int]:
        ttl = self.settings.ws_ticket_ttl_s
        sid = str(claims.session_id) if claims.session_id is not None else None
        try:
            ticket_id = await self.tickets.put(Ticket(claims.user_id, claims.expires_at, sid), ttl)
        except TicketStoreUnavailable as exc:
            raise Unavailable(
                "Tickets cannot be issued right now; connect with a bearer subprotocol or "
                "try again shortly",
                headers={"Retry-After": "2"},
            ) from exc
        return ticket_id, ttl

    # Helpers -------------------------------------------------------------------------------

    def _decode_refresh(self, token: str) -> TokenClaims:
        try:
            return self.codec.decode(token, "refresh")
        except InvalidToken as exc:
            raise Unauthorized(str(exc)) from exc

    async def _new_pair(
        self, session: AsyncSession, user_id: int, family_id: uuid.UUID | None
    ) -> TokenPair:
        refresh = self.codec.issue(user_id, "refresh")
        family = family_id or refresh.claims.jti
        access = self.codec.issue(user_id, "access", session_id=family)
        session.add(
            RefreshToken(
                jti=refresh.claims.jti,
                family_id=family,
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
        user = await session.get(User, claims.user_id)
        if user is None or user.deleted_at is not None:
            raise Unauthorized("Account no longer exists")
        return user


async def _account(session: AsyncSession, email: str) -> _Account | None:
    row = (
        await session.execute(
            select(User.id, User.password_hash).where(
                func.lower(User.email) == email.strip().lower(), User.deleted_at.is_(None)
            )
        )
    ).one_or_none()
    return None if row is None else _Account(row.id, row.password_hash)


__all__ = ["AuthService", "Login"]
