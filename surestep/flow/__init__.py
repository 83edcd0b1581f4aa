"""Flow: fan-out over batches (``surestep.map``), built on child runs and a durable wait."""

from __future__ import annotations

from surestep.flow.fanout import ChildRunError, map, map_async

__all__ = ["ChildRunError", "map", "map_async"]
