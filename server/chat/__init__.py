"""Ride chat: members are the driver and passengers with confirmed bookings."""
