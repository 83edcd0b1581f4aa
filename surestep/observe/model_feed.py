"""The model figures of the scrape path, read in the background and served as last read.

The model figures (:mod:`surestep.observe.quality`) are the dearest part of the
cluster-wide figures: their queries read every model call of the window (tens of
thousands an hour on a busy cluster) and the drift check moves and sorts up to 10,000
confidences per (step, model). At a million runs and 200,000 calls that took several
hundred milliseconds on a shared 2-core machine, against a target of 50 ms a scrape.

So a process that serves ``/metrics`` reads them off the scrape path: a scrape is served
what was read last (nothing on the very first scrape) and, once it has its answer, starts
a read in a thread of its own if they are older than ``refresh_after`` seconds (after, so that
the read does not compete with the scrape for the interpreter and the database). The
figures a scrape shows are therefore at most ``refresh_after`` seconds, plus one read, old:
fine for figures over a window of an hour, and for drift, which compares an hour with a
week (it is read again at most once a ``DRIFT_CACHE_SECONDS``). ``surestep stats`` and
``surestep top`` read everything at once, as of the moment they ask.

>>> feed = ModelFeed(store, window=3600)                     # doctest: +SKIP
>>> feed.last()                # None at first; then the figures read last
>>> feed.refresh(at=clock.now())   # read them again in the background, if stale
"""

from __future__ import annotations

import logging
import threading

from surestep.observe.drift import DriftReport, DriftSettings
from surestep.observe.quality import ModelFigures, read_model_figures
from surestep.storage import Store
from surestep.storage.rows import Cursor

log = logging.getLogger("surestep.observe")

#: How old the model figures a scrape is served may grow before one starts a new read.
DEFAULT_REFRESH = 15.0
#: How long drift reports are reused between reads (drift compares an hour with a week:
#: it moves slowly, and reading it is the dearest part of the model figures).
DRIFT_CACHE_SECONDS = 60.0


class ModelFeed:
    """The last model figures read from ``store``, and at most one read under way."""

    def __init__(
        self,
        store: Store,
        window: float,
        drift: DriftSettings | None = None,
        refresh_after: float = DEFAULT_REFRESH,
        *,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self._owns_store = owns_store  # opened for the feed alone: close() closes it
        self.window = window
        self.drift = drift or DriftSettings()
        self.refresh_after = refresh_after
        self._lock = threading.Lock()
        self._last: tuple[float, ModelFigures] | None = None
        self._drift: tuple[float, list[DriftReport]] | None = None
        self._reading: threading.Thread | None = None

    def last(self) -> ModelFigures | None:
        """The figures read last (None before the first read ends)."""
        with self._lock:
            return None if self._last is None else self._last[1]

    def refresh(self, at: float) -> None:
        """Start a read as of ``at`` in a thread of its own if the figures read last are
        ``refresh_after`` seconds older than ``at`` (or none was read) and none is under way."""
        with self._lock:
            stale = self._last is None or not 0 <= at - self._last[0] < self.refresh_after
            if stale and self._reading is None:
                self._reading = threading.Thread(
                    target=self._read, args=(at,), name="surestep-model-figures", daemon=True
                )
                self._reading.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the read under way, if any, to end."""
        with self._lock:
            reading = self._reading
        if reading is not None:
            reading.join(timeout)

    def close(self) -> None:
        """Wait for the read under way, then close the store if it is the feed's own."""
        self.wait()
        if self._owns_store:
            self.store.close()

    def read_now(self, at: float) -> ModelFigures:
        """Read the figures as of ``at`` in the calling thread, and keep them."""
        with self.store.reading() as cur:
            return self.read_with(cur, at)

    def read_with(self, cur: Cursor, at: float) -> ModelFigures:
        """Read the figures as of ``at`` with ``cur`` (in the snapshot of the figures
        read beside them), reusing drift reports read within DRIFT_CACHE_SECONDS; keep them."""
        with self._lock:
            known = self._drift
        fresh = known is not None and 0 <= at - known[0] < DRIFT_CACHE_SECONDS
        figures = read_model_figures(
            cur, at - self.window, at, self.drift, known[1] if fresh and known else None
        )
        with self._lock:
            self._last = (at, figures)
            if not fresh:
                self._drift = (at, figures.drift)
        return figures

    def _read(self, at: float) -> None:
        try:
            self.read_now(at)
        except Exception:  # the next scrape tries again; meanwhile it serves the last read
            log.exception("reading the model figures failed; the next scrape tries again")
        finally:
            with self._lock:
                self._reading = None
