"""JWT issue and verification. Accepted algorithms are pinned by settings; `typ` is enforced."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jose import jwt
from jose.exceptions import JOSEError

from server.config import Settings

TokenType = Literal["access", "refresh", "device"]


class InvalidToken(Exception):
    """Signature, algorithm, expiry, type or shape is wrong. The message is safe to show."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    jti: uuid.UUID
    typ: TokenType
    issued_at: datetime
    expires_at: datetime
    session_id: uuid.UUID | None = None
    """`sid`: the refresh-token family an access token came from (None on tokens issued
    before sessions were tracked; they stay valid until they expire)."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: TokenClaims


def key_id(key: str) -> str:
    """The `kid` header of tokens signed with `key`: a digest, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


VERIFIED_CACHE_SIZE = 4096
"""Verified access tokens kept per process (about 1 KiB each)."""


class TokenCodec:
    """Signs with `JWT_SECRET` (its key id in the `kid` header) and verifies with it or with any
    of `JWT_ACCEPTED_SECRETS`, chosen by the token's `kid`, so the signing key can be rotated
    without logging anyone out (docs/operations.md, "Rotating JWT_SECRET"). A token without
    `kid` (issued before key ids) is verified with the current key."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.signing_key()
        self._kid = key_id(self._key)
        self._keys = {key_id(k): k for k in settings.accepted_keys()}
        self._keys[self._kid] = self._key
        self._algorithms = list(settings.jwt_algorithms)
        self._ttl: dict[TokenType, int] = {
            "access": settings.access_token_ttl_s,
            "refresh": settings.refresh_token_ttl_s,
            "device": settings.device_token_ttl_s,
        }
        # Access tokens already verified: token -> (claims, exp). A client sends the same
        # token with every request for its lifetime, and python-jose's decode is ~0.3 ms of
        # CPU; a hit is a dict lookup and the expiry check (docs/decisions.md D38). Only tokens
        # whose signature was verified get in, so a forged one can never hit.
        self._verified: dict[str, tuple[TokenClaims, int]] = {}

    def issue(
        self,
        user_id: int,
        typ: TokenType,
        jti: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
    ) -> IssuedToken:
        now = datetime.now(UTC).replace(microsecond=0)
        claims = TokenClaims(
            user_id=user_id,
            jti=jti or uuid.uuid4(),
            typ=typ,
            issued_at=now,
            expires_at=now + timedelta(seconds=self._ttl[typ]),
            session_id=session_id,
        )
        payload = {
            "sub": str(user_id),
            "iat": int(claims.issued_at.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "jti": str(claims.jti),
            "typ": typ,
        }
        if session_id is not None:
            payload["sid"] = str(session_id)
        token = jwt.encode(
            payload, self._key, algorithm=self._algorithms[0], headers={"kid": self._kid}
        )
        return IssuedToken(token, claims)

    def decode(self, token: str, typ: TokenType) -> TokenClaims:
        if typ == "access":
            hit = self._verified.get(token)
            if hit is not None:
                claims, exp = hit
                if exp < int(time.time()):  # python-jose's rule: valid through its `exp` second
                    del self._verified[token]
                    raise InvalidToken("Token expired")
                return claims
        claims = self._decode(token, typ)
        if typ == "access":
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # the oldest entry
            self._verified[token] = (claims, int(claims.expires_at.timestamp()))
        return claims

    def _decode(self, token: str, typ: TokenType) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self._algorithms:
                raise InvalidToken("Token algorithm not accepted")
            kid = header.get("kid")
            key = self._key if kid is None else self._keys.get(str(kid))
            if key is None:
                raise InvalidToken("Token signed with a key no longer accepted")
            payload = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                options={"require_exp": True, "require_iat": True, "require_sub": True},
            )
        except InvalidToken:
            raise
        except JOSEError as exc:
            raise InvalidToken(_reason(exc)) from exc
        return _claims(payload, typ)


def _reason(exc: JOSEError) -> str:
    return "Token expired" if "expired" in str(exc).lower() else "Invalid token"


def _claims(payload: dict[str, Any], typ: TokenType) -> TokenClaims:
    if payload.get("typ") != typ:
        raise InvalidToken(
            f"Expected an {typ} token" if typ == "access" else f"Expected a {typ} token"
        )
    if not isinstance(payload.get("sid", ""), str):
        raise InvalidToken("Invalid token claims")
    try:
        sid = payload.get("sid")
        return TokenClaims(
            user_id=int(payload["sub"]),
            jti=uuid.UUID(str(payload["jti"])),
            typ=typ,
            issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            session_id=None if sid is None else uuid.UUID(str(sid)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidToken("Invalid token claims") from exc
