"""Contract tests: the exact HTTP requests the Supabase backend sends (respx, no network)."""
