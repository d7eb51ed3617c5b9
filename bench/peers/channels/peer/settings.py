"""Minimal Django settings for the Channels peer (no database, no auth)."""

import os

SECRET_KEY = "bench-only"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ASGI_APPLICATION = "peer.asgi.application"
LAYER = os.environ.get("PEER_LAYER", "pubsub")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": (
            "channels_redis.pubsub.RedisPubSubChannelLayer"
            if LAYER == "pubsub"
            else "channels_redis.core.RedisChannelLayer"
        ),
        "CONFIG": {
            "hosts": [os.environ["REDIS_URL"]],
            "prefix": os.environ.get("PEER_PREFIX", "bench"),
        },
    }
}
USE_TZ = True
