"""Kuda's client-side Python: `kuda.client` is the asyncio client for the REST + WebSocket API;
`kuda.loadtest` is the load tool (`kuda loadtest`, behind the `loadtest` extra)."""
