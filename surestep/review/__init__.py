"""Human review as a formal branch of a workflow.

- ``request``: ``request_review`` (and the ``step_exhausted`` task of
  ``on_exhausted="review"``), on the engine's run seam;
- ``policy``: pure decisions: who a task goes to next, what expiry does;
- ``store`` / ``queries`` / ``resolve``: tasks, their inbox and what a decision does to
  its run, in the run store's database and transactions;
- ``audit``: the hash-chained decision log; ``stats``: review figures;
- ``service``: ``app.reviews``, which the CLI and the REST API call.
"""
