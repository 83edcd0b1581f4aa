"""Names and versions of workflows and steps, mapped to their functions."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from surestep.errors import ConfigurationError, DuplicateWorkflowError, UnknownWorkflowError
from surestep.names import check_name
from surestep.retry import Retry
from surestep.serialization import Codec
from surestep.storage.rows import Placement

OnExhausted = Literal["dead_letter", "fail", "review"]
ON_EXHAUSTED: tuple[str, ...] = ("dead_letter", "fail", "review")


@dataclass(frozen=True, eq=False)
class StepDef:
    name: str
    fn: Callable[..., Any]
    retry: Retry
    timeout: float | None
    on_exhausted: OnExhausted
    is_async: bool
    codec: Codec
    compensate: StepDef | None = None


@dataclass(frozen=True, eq=False)
class WorkflowDef:
    name: str
    version: str
    fn: Callable[..., Any]
    is_async: bool
    codec: Codec
    budget_usd: float | None = None  # what its model calls may cost per run, by default
    queue: str | None = None  # the queue its runs are claimed through (None: no queue)
    concurrency_key: Callable[..., Any] | None = None  # the run's key, from its arguments
    per_key_concurrency: int | None = None  # runs of one key running at once, in its queue

    def placement(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], priority: int | None = None
    ) -> Placement | None:
        """Where a run of this workflow with these arguments goes: its queue, priority
        and concurrency key; None for a workflow in no queue."""
        if priority is not None:
            check_priority(f"start of workflow {self.name!r}", priority)
        if self.queue is None:
            if priority:
                raise ConfigurationError(
                    f"workflow {self.name!r}: priority orders the claims of a queue, and "
                    f"this workflow is in none; declare it with @app.workflow(queue=...)"
                )
            return None
        key = None
        if self.concurrency_key is not None:
            try:
                found = self.concurrency_key(*args, **kwargs)
            except Exception as exc:
                raise ConfigurationError(
                    f"workflow {self.name!r}: its concurrency_key raised "
                    f"{type(exc).__name__}: {exc}; it takes the workflow's arguments"
                ) from exc
            if found is not None and not isinstance(found, str | int):
                raise ConfigurationError(
                    f"workflow {self.name!r}: concurrency_key returned {found!r}; return "
                    f"a str (a tenant's id, say), an int, or None for no key"
                )
            key = None if found is None else str(found)
        return Placement(self.queue, priority or 0, key)


@dataclass(frozen=True)
class QueueDef:
    """A queue declared with ``app.queue``: its limits hold across every worker."""

    name: str
    concurrency: int
    rate_per_second: float | None = None
    per_key_concurrency: int | None = None  # agreed by the queue's keyed workflows


#: A priority is stored in a 32-bit column (PostgreSQL INTEGER).
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)


def check_priority(where: str, priority: object) -> None:
    low, high = _PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise ConfigurationError(
            f"{where}: priority must be an int from {low} to {high} (higher is claimed "
            f"first), got {priority!r}"
        )


def _positive_int(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{where} must be an int >= 1, got {value!r}")
    return value


def check_budget(where: str, budget_usd: float | None) -> None:
    """A budget is a finite number of USD >= 0 (0: no paid call may be made)."""
    if budget_usd is None:
        return
    if (
        isinstance(budget_usd, bool)
        or not isinstance(budget_usd, int | float)
        or not math.isfinite(budget_usd)
        or budget_usd < 0
    ):
        raise ConfigurationError(
            f"{where}: budget_usd must be a number of USD >= 0 (or None), got {budget_usd!r}"
        )


class Registry:
    """The workflows and steps of one App."""

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowDef] = {}
        self._steps: dict[str, StepDef] = {}
        self._queues: dict[str, QueueDef] = {}

    def add_queue(self, name: str, concurrency: int, rate_per_second: float | None) -> QueueDef:
        check_name("queue name", name)
        if name in self._queues:
            raise DuplicateWorkflowError(
                f"queue {name!r} is already declared; declare each queue once, with app.queue"
            )
        _positive_int(f"queue {name!r}: concurrency", concurrency)
        if rate_per_second is not None and (
            isinstance(rate_per_second, bool)
            or not isinstance(rate_per_second, int | float)
            or not math.isfinite(rate_per_second)
            or rate_per_second <= 0
        ):
            raise ConfigurationError(
                f"queue {name!r}: rate_per_second must be a number > 0 (claims per second "
                f"across all workers), or None for no rate limit; got {rate_per_second!r}"
            )
        queue = QueueDef(name, concurrency, rate_per_second)
        self._queues[name] = queue
        return queue

    def queues(self) -> list[QueueDef]:
        return list(self._queues.values())

    def _check_queue(
        self,
        workflow: str,
        queue: str | None,
        concurrency_key: Callable[..., Any] | None,
        per_key_concurrency: int | None,
    ) -> None:
        """Refuse queue settings that cannot work, at declaration; record the queue's
        per-key cap (one per queue: the keys are the queue's, across its workflows)."""
        where = f"workflow {workflow!r}"
        if queue is None:
            if concurrency_key is not None or per_key_concurrency is not None:
                raise ConfigurationError(
                    f"{where}: concurrency_key and per_key_concurrency apply within a queue; "
                    f"add queue=... (declared with app.queue)"
                )
            return
        declared = self._queues.get(queue)
        if declared is None:
            known = ", ".join(sorted(self._queues)) or "none"
            raise ConfigurationError(
                f"{where}: no queue named {queue!r} is declared (known: {known}); declare it "
                f'first with app.queue("{queue}", concurrency=N)'
            )
        if (concurrency_key is None) != (per_key_concurrency is None):
            raise ConfigurationError(
                f"{where}: give concurrency_key and per_key_concurrency together (the key "
                f"names a tenant, say; the cap is how many of its runs may run at once)"
            )
        if concurrency_key is None or per_key_concurrency is None:
            return
        if not callable(concurrency_key):
            raise ConfigurationError(
                f"{where}: concurrency_key takes a function of the workflow's arguments, "
                f"e.g. lambda doc: doc.tenant"
            )
        cap = _positive_int(f"{where}: per_key_concurrency", per_key_concurrency)
        if declared.per_key_concurrency not in (None, cap):
            raise ConfigurationError(
                f"{where}: per_key_concurrency={cap}, but another workflow of queue "
                f"{queue!r} declared {declared.per_key_concurrency}; a queue's keys share "
                f"one cap, so give its workflows the same per_key_concurrency"
            )
        self._queues[queue] = QueueDef(
            declared.name, declared.concurrency, declared.rate_per_second, cap
        )

    def add_workflow(
        self,
        fn: Callable[..., Any],
        name: str,
        version: str,
        budget_usd: float | None = None,
        *,
        queue: str | None = None,
        concurrency_key: Callable[..., Any] | None = None,
        per_key_concurrency: int | None = None,
    ) -> WorkflowDef:
        check_name("workflow name", name)
        check_name(f"version of workflow {name!r}", str(version))
        if name in self._workflows:
            other = self._workflows[name].fn
            raise DuplicateWorkflowError(
                f"workflow {name!r} is already registered (by {other.__module__}."
                f"{other.__qualname__}); give one of them another name=..."
            )
        codec = Codec(fn, f"workflow {name!r}")
        check_budget(f"workflow {name!r}", budget_usd)
        self._check_queue(name, queue, concurrency_key, per_key_concurrency)
        wf = WorkflowDef(
            name,
            str(version),
            fn,
            inspect.iscoroutinefunction(fn),
            codec,
            budget_usd,
            queue,
            concurrency_key,
            per_key_concurrency,
        )
        self._workflows[name] = wf
        return wf

    def add_step(
        self,
        fn: Callable[..., Any],
        name: str,
        retry: Retry,
        timeout: float | None,
        on_exhausted: str,
        compensate: StepDef | None = None,
    ) -> StepDef:
        check_name("step name", name)
        if name in self._steps:
            raise DuplicateWorkflowError(
                f"step {name!r} is already registered; give one of them another name=..."
            )
        if on_exhausted not in ON_EXHAUSTED:
            raise ConfigurationError(
                f"step {name!r}: on_exhausted={on_exhausted!r}; use one of {ON_EXHAUSTED}"
            )
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"step {name!r}: timeout must be > 0 seconds or None")
        if not isinstance(retry, Retry):
            raise ConfigurationError(f"step {name!r}: retry= takes a surestep.Retry(...)")
        step = StepDef(
            name,
            fn,
            retry,
            timeout,
            on_exhausted,  # type: ignore[arg-type]
            inspect.iscoroutinefunction(fn),
            Codec(fn, f"step {name!r}"),
            compensate,
        )
        self._steps[name] = step
        return step

    def find(self, name: str) -> WorkflowDef | None:
        """The workflow registered under ``name``, or None."""
        return self._workflows.get(name)

    def workflow(self, name: str) -> WorkflowDef:
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise UnknownWorkflowError(
                f"no workflow named {name!r} is registered (known: {known}); import the "
                f"module that defines it before starting or running it"
            ) from None

    def step(self, name: str) -> StepDef:
        try:
            return self._steps[name]
        except KeyError:
            raise UnknownWorkflowError(
                f"no step named {name!r} is registered; import the module that defines it "
                f"(a recorded compensation names it)"
            ) from None

    def workflows(self) -> list[WorkflowDef]:
        return list(self._workflows.values())
