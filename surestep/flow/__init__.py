"""Starting runs from outside a workflow: cron schedules and webhook triggers (and, in
time, fan-out and queues): features built on the engine's idempotent start."""
