"""PostgreSQL: the embedded server, connection URLs and migrations (schema per side)."""
