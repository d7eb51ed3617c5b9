"""Kuda's asyncio client: `async with Client(url, get_token) as c: async for e in c.subscribe(...)`.

See docs/clients.md for the guarantees, the state machine and what each close code does."""

from kuda.client.backoff import Action, Backoff, after_close
from kuda.client.client import Client
from kuda.client.subscription import Subscription
from kuda.client.types import (
    ClientClosed,
    Disconnected,
    Frame,
    KudaError,
    ServerError,
    State,
    StateChange,
    TokenFn,
    Unauthorized,
)

__all__ = [
    "Action",
    "Backoff",
    "Client",
    "ClientClosed",
    "Disconnected",
    "Frame",
    "KudaError",
    "ServerError",
    "State",
    "StateChange",
    "Subscription",
    "TokenFn",
    "Unauthorized",
    "after_close",
]
