"""Opt-in live tests: the SDK over SupabaseBackend against a running ``supabase start``."""
