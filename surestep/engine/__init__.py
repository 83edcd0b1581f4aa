"""The engine: the per-step path of a run.

- ``context``: the current run and step, and ``ActiveRun``, the seam every feature uses
  (take a position, look up its record, record an outcome under the lease, halt to wait).
- ``runtime``: ``RunExecution`` executes one claimed run: replay, attempts, checkpoints,
  settling and compensation.
- ``steps``: what ``@app.step`` returns, and per-attempt timeouts.
- ``waits``: durable sleep, events and child runs, built on the seam.
- ``halts``: how an execution stops early (``Halt``) and how the run settles (``Verdict``).
- ``worker``: claims due runs under leases and executes them.
"""
