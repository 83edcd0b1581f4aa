"""The model-call ledger: every call of every LLM step, as it ended, and run budgets.

A call is recorded in its own transaction the moment it ends, used or not, so what a
run cost includes its repairs, fallbacks, low-confidence answers and faulted calls, and
survives a crash of the worker that made them. It is not fenced by the run's lease: a
call a stale worker made still cost money.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from surestep.errors import CorruptRecordError, RunNotFoundError
from surestep.registry import check_budget
from surestep.storage.transient import retry_transient
from surestep.storage.workers import Transactional


@dataclass(frozen=True)
class ModelCall:
    """One model call, as the ledger keeps it."""

    run_id: str
    position: int
    attempt: int  # the step attempt it belongs to
    seq: int  # its order within that attempt, from 1
    workflow: str
    step: str
    provider: str
    model: str
    prompt_hash: str
    schema_hash: str | None
    outcome: str  # ok, review, invalid, low_confidence, or a fault (timeout, ...)
    error: str | None
    finish_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    priced: bool
    price_version: str | None
    latency: float
    confidence: float | None
    chosen: bool
    cached: bool
    started_at: float
    #: What of the stored row could not be read (a hand edit, a bad restore): each such
    #: column is shown as 0/None/False instead, so one bad row never breaks a listing.
    problems: tuple[str, ...] = field(default=(), compare=False)

    @property
    def model_ref(self) -> str:
        return f"{self.provider}:{self.model}"


_COLUMNS = tuple(f.name for f in fields(ModelCall) if f.name != "problems")
_INTS = ("position", "attempt", "seq", "input_tokens", "output_tokens")
_FLOATS = ("cost_usd", "latency", "started_at")
_FLAGS = ("priced", "chosen", "cached")
_INSERT = (
    f"INSERT INTO surestep_llm_calls ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


@dataclass(frozen=True)
class CostLine:
    """What one workflow's model calls cost over a period."""

    workflow: str
    step: str | None  # None: every step of the workflow
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    wasted_usd: float  # calls whose reply was not used (repairs, fallbacks, faults)
    runs: int  # runs that made calls
    succeeded: int  # of those, runs that succeeded

    @property
    def per_success_usd(self) -> float | None:
        """Cost per successful run: everything spent, over the runs that succeeded."""
        return self.cost_usd / self.succeeded if self.succeeded else None


class CallLedger:
    """The ``surestep_llm_calls`` table and the budgets on ``surestep_runs``."""

    def __init__(self, store: Transactional) -> None:
        self._store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def record(self, call: ModelCall) -> None:
        # Texts come from providers (error messages, finish reasons): PostgreSQL refuses
        # a NUL in a text column, and the call must be recorded all the same.
        values = tuple(_storable(getattr(call, name)) for name in _COLUMNS)
        with self._store.transaction() as cur:
            cur.execute(_INSERT, values)

    @retry_transient
    def budget(self, run_id: str) -> tuple[float | None, float]:
        """The run's budget (None: none) and what its calls have cost so far.

        Raises :class:`CorruptRecordError` when either cannot be read as a number (a
        hand edit): a budget that cannot be checked must not be taken as no budget."""
        with self._store.reading() as cur:
            cur.execute(
                "SELECT budget_usd, (SELECT COALESCE(SUM(cost_usd), 0) FROM surestep_llm_calls"
                " WHERE run_id = ?) FROM surestep_runs WHERE id = ?",
                (run_id, run_id),
            )
            row = cur.fetchone()
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        budget = None if row[0] is None else _finite(row[0])
        if row[0] is not None and (budget is None or budget < 0):
            detail = f"the budget is {row[0]!r}, not a number of USD >= 0"
            raise CorruptRecordError("surestep_runs", "budget_usd", run_id, None, detail)
        spent = _finite(row[1])
        if spent is None:
            detail = f"the calls' costs add up to {row[1]!r}: a call's cost_usd is not a number"
            raise CorruptRecordError("surestep_llm_calls", "cost_usd", run_id, None, detail)
        return budget, spent

    @retry_transient
    def set_budget(self, run_id: str, budget_usd: float | None) -> None:
        """Give a run another budget (None: none); redrive it to go on."""
        check_budget("budget", budget_usd)
        with self._store.transaction() as cur:
            cur.execute(
                "UPDATE surestep_runs SET budget_usd = ? WHERE id = ?", (budget_usd, run_id)
            )
            if cur.rowcount != 1:
                raise RunNotFoundError(f"no run with id {run_id!r}")

    @retry_transient
    def calls(self, run_id: str) -> list[ModelCall]:
        """A run's model calls in the order they were made."""
        with self._store.reading() as cur:
            cur.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM surestep_llm_calls WHERE run_id = ?"
                " ORDER BY position, attempt, seq, id",
                (run_id,),
            )
            return [_call(row) for row in cur.fetchall()]

    @retry_transient
    def costs(
        self, since: float, workflow: str | None = None, by_step: bool = False
    ) -> list[CostLine]:
        """Cost by workflow (and step) of the calls made since ``since`` (epoch seconds)."""
        args: list[object]
        where, args = "c.started_at >= ?", [since]
        if workflow is not None:
            where, args = where + " AND c.workflow = ?", [since, workflow]
        with self._store.reading() as cur:
            cur.execute(
                f"SELECT c.workflow, {'c.step' if by_step else 'NULL'}, COUNT(*),"
                " SUM(c.input_tokens), SUM(c.output_tokens),"
                " SUM(c.cost_usd), SUM(CASE WHEN c.chosen THEN 0 ELSE c.cost_usd END),"
                " COUNT(DISTINCT c.run_id),"
                " COUNT(DISTINCT CASE WHEN r.state = 'success' THEN c.run_id END)"
                " FROM surestep_llm_calls c LEFT JOIN surestep_runs r ON r.id = c.run_id"
                f" WHERE {where} GROUP BY c.workflow{', c.step' if by_step else ''}"
                f" ORDER BY c.workflow{', c.step' if by_step else ''}",
                tuple(args),
            )
            return [_cost_line(row) for row in cur.fetchall()]


def _call(row: Sequence[object]) -> ModelCall:
    """A stored row as a ModelCall; a value that cannot be read is replaced (0, None,
    False, "") and named in ``problems``, so a listing shows the row instead of failing."""
    call_id, values = row[0], dict(zip(_COLUMNS, row[1:], strict=True))
    problems: list[str] = []

    def bad(column: str, shown: object) -> object:
        problems.append(
            f"corrupt record: surestep_llm_calls.{column} of call {call_id} is "
            f"{values[column]!r}; shown as {shown!r}"
        )
        return shown

    for name in _INTS:
        number = _finite(values[name])
        ok = number is not None and number.is_integer() and number >= 0
        values[name] = int(number) if ok and number is not None else bad(name, 0)
    for name in _FLOATS:
        number = _finite(values[name])
        values[name] = number if number is not None else bad(name, 0.0)
    if values["confidence"] is not None:
        number = _finite(values["confidence"])
        values["confidence"] = number if number is not None else bad("confidence", None)
    for name in _FLAGS:
        flag = values[name]
        values[name] = bool(flag) if flag in (0, 1) else bad(name, False)
    for name, value in values.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            values[name] = str(value)  # a text column holding bytes: shown as it is
    return ModelCall(**values, problems=tuple(problems))  # type: ignore[arg-type]


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a number (or NaN, ±inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _storable(value: object) -> object:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _cost_line(row: Sequence[object]) -> CostLine:
    workflow, step, calls, tokens_in, tokens_out, cost, wasted, runs, succeeded = row
    return CostLine(
        str(workflow),
        None if step is None else str(step),
        int(calls),  # type: ignore[call-overload]
        int(tokens_in or 0),  # type: ignore[call-overload]
        int(tokens_out or 0),  # type: ignore[call-overload]
        float(cost or 0),  # type: ignore[arg-type]
        float(wasted or 0),  # type: ignore[arg-type]
        int(runs),  # type: ignore[call-overload]
        int(succeeded),  # type: ignore[call-overload]
    )
