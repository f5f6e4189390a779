"""Fallback chains, key pools and circuit breakers (issue 16)."""
