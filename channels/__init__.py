"""The realtime layer: WebSocket gateway, event log, brokers and local fan-out.

It knows nothing about the carpooling domain: the domain registers its channels' rules and
hooks on `Realtime.registry`, appends durable events with `events.append` inside its own
transactions, and publishes live-only events with `Realtime.publish_ephemeral` or
`events.publish_after_commit`.
"""

from channels.authz import Access, ChannelError, ChannelRegistry, ResolvedChannel
from channels.codes import CloseCode, ErrorCode
from channels.events import append, append_many, lock_channels, publish_after_commit, revoke
from channels.node import NodeConfig, Realtime
from channels.types import AuthError, Event, Identity, Unavailable

__all__ = [
    "Access",
    "AuthError",
    "ChannelError",
    "ChannelRegistry",
    "CloseCode",
    "ErrorCode",
    "Event",
    "Identity",
    "NodeConfig",
    "Realtime",
    "ResolvedChannel",
    "Unavailable",
    "append",
    "append_many",
    "lock_channels",
    "publish_after_commit",
    "revoke",
]
