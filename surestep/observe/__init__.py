"""Observability: metrics, traces and logs, plugged into the engine's hooks."""
