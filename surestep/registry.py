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

    def add_workflow(
        self, fn: Callable[..., Any], name: str, version: str, budget_usd: float | None = None
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
        wf = WorkflowDef(name, str(version), fn, inspect.iscoroutinefunction(fn), codec, budget_usd)
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
