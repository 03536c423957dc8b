"""Alembic migrations: one history that runs on SQLite and on PostgreSQL."""
