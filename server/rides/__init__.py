"""Rides: publish, edit, state machine, search."""
