"""Live statistics for administrators: `GET /api/v1/admin/stats` and the live `stats` channel."""
