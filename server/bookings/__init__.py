"""Bookings: request, confirm, reject, cancel; seat accounting without overbooking."""
