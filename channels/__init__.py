"""The realtime layer: WebSocket gateway, event log, brokers and local fan-out.

It knows nothing about the carpooling domain; the domain registers channel rules through it.
"""
