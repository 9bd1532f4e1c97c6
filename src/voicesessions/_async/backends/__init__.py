"""Backends: the small interface between the SDK and a database (PostgREST or PostgreSQL)."""
