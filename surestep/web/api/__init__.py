"""The routes under ``/api``, one module per resource: parse, call ``app.*``, render."""
