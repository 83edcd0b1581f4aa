"""The engine: the per-step path of a run.

- ``context``: the current run and step, and ``ActiveRun``, the seam every feature uses
  (take a position, look up its record, record an outcome under the lease, halt to wait).
- ``runtime``: ``RunExecution``, the per-step path of one claimed run: replay, attempts,
  checkpoints, halts.
- ``lifecycle``: how an execution begins (the workflow function, or compensations) and
  how the run is settled.
- ``steps``: what ``@app.step`` returns, and per-attempt timeouts.
- ``waits``: durable sleep, events and child runs, built on the seam.
- ``halts``: how an execution stops early (``Halt``) and how the run settles (``Verdict``).
- ``patches``: ``patched`` / ``deprecate_patch`` markers for code changes in place.
- ``presence``: a worker's record of what it serves, with a heartbeat.
- ``worker``: claims due runs under leases and executes them.
"""
