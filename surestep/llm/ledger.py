"""The model-call ledger: every call of every LLM step, as it ended, and run budgets.

A call is recorded in its own transaction the moment it ends, used or not, so what a
run cost includes its repairs, fallbacks, low-confidence answers and faulted calls, and
survives a crash of the worker that made them. It is not fenced by the run's lease: a
call a stale worker made still cost money.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from surestep.errors import RunNotFoundError
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

    @property
    def model_ref(self) -> str:
        return f"{self.provider}:{self.model}"


_COLUMNS = tuple(f.name for f in fields(ModelCall))
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
        with self._store.transaction() as cur:
            cur.execute(_INSERT, tuple(getattr(call, name) for name in _COLUMNS))

    @retry_transient
    def budget(self, run_id: str) -> tuple[float | None, float]:
        """The run's budget (None: none) and what its calls have cost so far."""
        with self._store.reading() as cur:
            cur.execute(
                "SELECT budget_usd, (SELECT COALESCE(SUM(cost_usd), 0) FROM surestep_llm_calls"
                " WHERE run_id = ?) FROM surestep_runs WHERE id = ?",
                (run_id, run_id),
            )
            row = cur.fetchone()
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        return (None if row[0] is None else float(row[0])), float(row[1])

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
                f"SELECT {', '.join(_COLUMNS)} FROM surestep_llm_calls WHERE run_id = ?"
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
    values = dict(zip(_COLUMNS, row, strict=True))
    for flag in ("priced", "chosen", "cached"):
        values[flag] = bool(values[flag])
    return ModelCall(**values)  # type: ignore[arg-type]


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
