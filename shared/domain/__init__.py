"""Business rules as plain functions that take a session and return values."""
