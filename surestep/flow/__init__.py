"""Flow: fan-out over batches (``surestep.map``), cron schedules and webhook triggers:
features built on child runs, durable waits and the engine's idempotent start."""

from __future__ import annotations

from surestep.flow.fanout import ChildRunError, map, map_async

__all__ = ["ChildRunError", "map", "map_async"]
