"""voicesessions: voice training sessions on Supabase or any PostgreSQL."""

__version__ = "0.1.0"
__all__ = ["__version__"]
