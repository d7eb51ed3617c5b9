"""Ride alerts: saved searches and the `ride.matched` notifications they produce."""
