"""Avro value schemas for SQLite tables, and the per-row conversion into them."""
