"""Reconnect delays: full-jitter exponential backoff, and what each close code asks for."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class Action(Enum):
    STOP = "stop"  # 1000: the server ended the session on purpose
    RESTART = "restart"  # 1012: the instance restarts; reconnect after a short jittered pause
    RENEW = "renew"  # 4401: the token expired; get a fresh one and reconnect at once
    SLOW_DOWN = "slow_down"  # 4429: back off, at least `Backoff.slow_down_s`
    BACKOFF = "backoff"  # anything else (1006 lost, 1011, 4403, refused handshakes)


RESTART = 1012
TOKEN_EXPIRED = 4401
RATE_LIMITED = 4429


def after_close(code: int) -> Action:
    """What the client does after the server closed with `code` (1006: no close frame)."""
    if code == 1000:
        return Action.STOP
    if code == RESTART:
        return Action.RESTART
    if code == TOKEN_EXPIRED:
        return Action.RENEW
    if code == RATE_LIMITED:
        return Action.SLOW_DOWN
    return Action.BACKOFF


@dataclass
class Backoff:
    """Full jitter (a uniform delay in [0, min(max_s, min_s * 2**attempt)]), so that many
    clients dropped at once spread their reconnects instead of arriving together. The attempt
    count resets only after a connection stayed up for `stable_s`."""

    min_s: float = 0.5
    max_s: float = 20.0
    stable_s: float = 10.0
    restart_s: float = 1.0
    slow_down_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def connected_for(self, seconds: float) -> None:
        """Called when a connection ends: a stable one resets the attempt count."""
        if seconds >= self.stable_s:
            self.attempt = 0

    def delay(self, action: Action, lasted_s: float) -> float:
        """The pause before the next connection attempt after a close."""
        self.connected_for(lasted_s)
        if action is Action.RESTART:
            return self.rng.uniform(0, self.restart_s)
        if action is Action.RENEW and lasted_s >= self.stable_s:
            return 0.0
        if action is Action.SLOW_DOWN:
            return max(self.slow_down_s, self.next())
        return self.next()
