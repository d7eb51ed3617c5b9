"""Kuda's client-side Python: `kuda.client` is the asyncio client for the REST + WebSocket API."""
