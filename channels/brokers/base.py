"""The broker interface. The hub reference-counts channels, so a broker sees one subscription
per channel per instance however many sockets listen."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

MessageHandler = Callable[[str, bytes], None]
"""Called with (channel, message) for every message on a subscribed channel, in broker order."""

ResyncHandler = Callable[[], Awaitable[None]]
"""Called after the broker reconnected: messages may have been missed meanwhile."""


class BrokerUnavailable(Exception):
    """The broker could not take the messages; the outbox relay will publish them later."""


class Broker(Protocol):
    kind: str

    @property
    def healthy(self) -> bool: ...

    async def start(self, on_message: MessageHandler, on_resync: ResyncHandler) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Returns once the subscription is active (or, when the broker is down, once it is
        recorded: it becomes active on reconnect, followed by `on_resync`)."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish in order. Raises BrokerUnavailable when nothing can be guaranteed sent."""
