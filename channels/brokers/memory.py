"""In-process broker: the embedded default, one instance."""

from __future__ import annotations

from collections.abc import Sequence

from channels.brokers.base import MessageHandler, ResyncHandler


class MemoryBroker:
    kind = "memory"

    def __init__(self) -> None:
        self._channels: set[str] = set()
        self._on_message: MessageHandler | None = None

    @property
    def healthy(self) -> bool:
        return True

    async def start(self, on_message: MessageHandler, on_resync: ResyncHandler) -> None:
        self._on_message = on_message

    async def stop(self) -> None:
        self._on_message = None
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        handler = self._on_message
        if handler is None:
            return
        for channel, message in messages:
            if channel in self._channels:
                handler(channel, message)
