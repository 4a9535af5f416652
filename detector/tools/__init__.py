"""Helper programs that run outside the daemon (e.g. under the system Python)."""
