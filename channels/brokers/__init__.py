"""Brokers behind one interface: in-process (single instance), Redis pub/sub (one server or
Sentinel), and Redis Cluster sharded pub/sub."""

from channels.brokers.base import Broker, BrokerUnavailable, MessageHandler
from channels.brokers.memory import MemoryBroker
from channels.brokers.redis import RedisBroker
from channels.brokers.redis_cluster import RedisClusterBroker
from channels.brokers.topology import RedisClient, RedisTopology, TopologyError, same_slot

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "MemoryBroker",
    "MessageHandler",
    "RedisBroker",
    "RedisClient",
    "RedisClusterBroker",
    "RedisTopology",
    "TopologyError",
    "same_slot",
]
