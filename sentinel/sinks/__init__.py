"""Sinks: where alerts (and dead letters) go."""
