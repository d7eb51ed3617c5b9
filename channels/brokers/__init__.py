"""Brokers behind one interface: in-process (single instance) and Redis pub/sub."""

from channels.brokers.base import Broker, BrokerUnavailable, MessageHandler
from channels.brokers.memory import MemoryBroker
from channels.brokers.redis import RedisBroker

__all__ = ["Broker", "BrokerUnavailable", "MemoryBroker", "MessageHandler", "RedisBroker"]
