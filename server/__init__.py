"""Kuda's FastAPI application: settings, REST, auth, CLI and the embedded database."""
