"""Stored notifications, pushed live on `user:{id}`."""
