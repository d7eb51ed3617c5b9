"""Accounts and authentication: passwords, JWTs, refresh rotation, WebSocket tickets."""
