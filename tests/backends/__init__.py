"""Backend tests: each backend against a real PostgreSQL, on both faces."""
