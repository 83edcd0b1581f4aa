"""The ``surestep`` command: a thin adapter over :class:`surestep.App`.

Each command parses its options, calls the library and renders the answer as a table,
or as JSON with ``--json``. Library errors end the command with ``error: <message>`` on
stderr and exit code 1; usage errors exit with 2. For example::

    surestep worker myproject.jobs:app --concurrency 32
    surestep dlq
    surestep retry 6f1c0b2e...

One module per command group: :mod:`surestep.cli.worker` (the worker),
:mod:`surestep.cli.runs` (inspecting and operating on runs), :mod:`surestep.cli.admin`
(the schema and housekeeping), :mod:`surestep.cli.versions` (deployed versions),
:mod:`surestep.cli.queues` (queues),
:mod:`surestep.cli.review` (review tasks and the audit log), :mod:`surestep.cli.users`
(users of the REST API), :mod:`surestep.cli.schedules` (cron schedules),
:mod:`surestep.cli.serve` (the API), :mod:`surestep.cli.chaos`
(the chaos model server);
:mod:`surestep.cli.common` holds what they share.
"""

from __future__ import annotations

import typer

from surestep.cli import (
    admin,
    chaos,
    llm,
    observe,
    queues,
    review,
    runs,
    schedules,
    serve,
    users,
    versions,
    worker,
)

app = typer.Typer(
    name="surestep",
    help="Run and inspect surestep workflows.",
    no_args_is_help=True,
    add_completion=False,
    # Locals may hold a database URL with its password.
    pretty_exceptions_show_locals=False,
)

# The order of registration is the order of `surestep --help`.
worker.register(app)
runs.register(app)
llm.register(app)
versions.register(app)
queues.register(app)
admin.register(app)
review.register(app)
schedules.register(app)
users.register(app)
serve.register(app)
observe.register(app)
chaos.register(app)


def main() -> None:
    """Entry point of the ``surestep`` console script."""
    app()


__all__ = ["app", "main"]
