"""The App's flow methods (``app.schedule``, ``app.webhook_trigger``, ``app.queue``), kept
here so the App stays a thin front over its parts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from surestep.names import default_name

if TYPE_CHECKING:
    from surestep.flow.schedules import Schedules
    from surestep.flow.triggers import Trigger, Triggers
    from surestep.registry import QueueDef, Registry, WorkflowDef

P = ParamSpec("P")
R = TypeVar("R")


class FlowMethods:
    """Mixed into :class:`surestep.App`."""

    registry: Registry
    schedules: Schedules
    triggers: Triggers

    def _resolve(self, workflow: Callable[..., Any] | str) -> WorkflowDef:
        raise NotImplementedError

    def schedule(
        self,
        cron: str,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
        version: str = "1",
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Start a run of the decorated function at every fire time of ``cron`` (in
        ``timezone``, DST-correct); it is registered as the workflow ``name``.

        >>> @app.schedule("0 3 * * *", name="nightly", timezone="Europe/Berlin")  # doctest: +SKIP
        ... def nightly(fired_at: datetime) -> None: ...

        Workers fire it, each fire once (run id ``schedule:<name>:<fire time>``).
        ``catch_up`` says what a worker does with fires missed while none ran:
        ``"latest"`` starts only the last, ``"all"`` each (at most 100), ``"none"``
        none. See docs/schedules.md.
        """

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            wf_name = name if name is not None else default_name(fn, "workflow")
            workflow: Callable[P, R] = self.schedules.add(
                fn, cron, name=wf_name, timezone=timezone, catch_up=catch_up, version=version
            )
            return workflow

        return register

    def webhook_trigger(self, workflow: Callable[..., Any] | str, *, secret_env: str) -> Trigger:
        """Let Standard Webhooks senders start runs of ``workflow`` with a POST to
        ``/api/trigger/<workflow>`` of ``surestep serve --app``, signed with the
        ``whsec_...`` secret in the environment variable ``secret_env``. The body (a JSON
        object) gives the workflow's arguments; the ``webhook-id`` the run id, so a
        redelivery starts nothing new. See docs/schedules.md.
        """
        return self.triggers.add(self._resolve(workflow).name, secret_env)

    def queue(
        self, name: str, *, concurrency: int, rate_per_second: float | None = None
    ) -> QueueDef:
        """Declare a queue: at most ``concurrency`` of its runs run at once across every
        worker on this database, and (optionally) at most ``rate_per_second`` start per
        second. Workflows join it with ``@app.workflow(queue=name)``.

        >>> app.queue("llm", concurrency=32)   # doctest: +SKIP

        The declaration in code is the truth: each worker writes it to the database when
        it starts (the last one started wins, during a deploy that changes it).
        """
        return self.registry.add_queue(name, concurrency, rate_per_second)
