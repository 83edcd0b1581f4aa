"""Observability that plugs into the hook catalogue: per-process metrics and event logs."""
