"""Django Channels: every socket joins the group `hot`; group messages are sent as they come."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer.settings")

import django

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

GROUP = os.environ.get("PEER_CHANNEL", "hot")


class Hot(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def tick(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws", Hot.as_asgi())])})
