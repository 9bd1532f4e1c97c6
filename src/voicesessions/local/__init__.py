"""Local database tooling: the embedded PostgreSQL server, the Supabase-compatibility
bootstrap and the migration runner."""
