"""What ``@app.step`` returns, and how a step attempt is bounded by its timeout."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

from surestep.engine.context import workflow_run
from surestep.errors import StepTimeoutError
from surestep.registry import StepDef


def call_with_timeout(step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run a plain step in its own thread and stop waiting for it after ``step.timeout``.

    Python cannot stop a thread, so a timed-out thread is abandoned: it runs on until the
    function returns, and whatever it returns is discarded. Give blocking calls their
    own timeouts (an HTTP client's, a driver's) so that abandoned threads end soon.
    """
    outcome: dict[str, Any] = {}
    finished = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(step.fn, *args, **kwargs)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=target, name=f"surestep-step-{step.name}", daemon=True).start()
    if not finished.wait(step.timeout):
        raise StepTimeoutError(
            f"step {step.name!r} ran longer than its timeout of {step.timeout}s; the "
            f"attempt counts as failed and its thread is abandoned"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def await_with_timeout(step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        async with asyncio.timeout(step.timeout) as scope:
            return await step.fn(*args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise StepTimeoutError(
                f"step {step.name!r} ran longer than its timeout of {step.timeout}s; the "
                f"attempt was cancelled and counts as failed"
            ) from None
        raise


def make_step_wrapper(step: StepDef) -> Callable[..., Any]:
    """The function ``@app.step`` returns: checkpointed inside a workflow, plain outside."""
    fn = step.fn

    def call(*args: Any, **kwargs: Any) -> Any:
        run = workflow_run()
        if run is None:
            return fn(*args, **kwargs)  # outside a workflow, or a step inside a step
        if step.is_async and run.loop is not None and _on_loop(run.loop):
            return run.run_step_async(step, run.next_position(), args, kwargs)
        return run.run_step(step, args, kwargs)

    return call


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
