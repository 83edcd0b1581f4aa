"""The decision audit log: append-only, each record hash-chained to the previous one of
its run, so that an edited, removed or reordered decision is found by ``verify``.

A record holds what the reviewer saw (payload, proposal, confidence, form, instructions)
and what they decided, with the time from the task's creation to the decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from surestep.storage import Store
from surestep.storage.rows import Cursor

GENESIS = "0" * 64


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run's decision log."""

    run_id: str
    seq: int | None
    message: str


def _digest(prev_hash: str, record: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{record}".encode()).hexdigest()


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def append(cur: Cursor, task: dict[str, Any], decision: dict[str, Any]) -> None:
    """Add the decision to its run's chain (the caller holds the run's row lock)."""
    cur.execute(
        "SELECT seq, hash FROM surestep_review_decisions WHERE run_id = ?"
        " ORDER BY seq DESC LIMIT 1",
        (task["run_id"],),
    )
    last = cur.fetchone()
    seq, prev_hash = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
    record = {
        **decision,
        "run_id": task["run_id"],
        "position": task["position"],
        "kind": task["kind"],
        "workflow": task["workflow"],
        "payload": task["payload"],
        "sensitive": task["sensitive"],
        "proposal": task["proposal"],
        "confidence": task["confidence"],
        "form": task["form"],
        "instructions": task["instructions"],
        "context": task["context"],
        "assignee": task["assignee"],
        "groups": task["groups"],
        "level": task["level"],
        "created_at": task["created_at"],
        "due_at": task["due_at"],
        "seconds_to_decision": decision["decided_at"] - task["created_at"],
    }
    text = canonical(record)
    cur.execute(
        "INSERT INTO surestep_review_decisions (task_id, run_id, seq, record, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (task["id"], task["run_id"], seq, text, prev_hash, _digest(prev_hash, text)),
    )


def verify(store: Store, run_id: str | None = None) -> tuple[int, list[Problem]]:
    """Check every run's chain (or one run's); return (records checked, problems)."""
    with store.reading() as cur:
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id else ("", ())
        cur.execute(
            "SELECT run_id, seq, task_id, record, prev_hash, hash FROM surestep_review_decisions"
            f" {where} ORDER BY run_id, seq",
            params,
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT id, run_id, outcome, data, reviewer, comment, decided_at"
            " FROM surestep_review_tasks WHERE decided_at IS NOT NULL"
            + (" AND run_id = ?" if run_id else ""),
            params,
        )
        decided = {
            int(r[0]): (r[1], _task_says(r[2], r[3], r[4], r[5], r[6])) for r in cur.fetchall()
        }
    problems: list[Problem] = []
    expected_seq: dict[str, int] = {}
    prev: dict[str, str] = {}
    seen: set[int] = set()
    for run, seq, task_id, record, prev_hash, digest in rows:
        want_seq = expected_seq.get(run, 1)
        if seq != want_seq:
            problems.append(Problem(run, seq, f"records {want_seq}..{seq - 1} are missing"))
        if prev_hash != prev.get(run, GENESIS):
            problems.append(Problem(run, seq, "does not chain to the record before it"))
        if _digest(prev_hash, record) != digest:
            problems.append(Problem(run, seq, "was changed after it was written (hash mismatch)"))
        seen.add(int(task_id))
        stored = decided.get(int(task_id))
        kept = json.loads(record)
        if kept.get("task_id") != int(task_id):
            problems.append(
                Problem(run, seq, f"belongs to task {kept.get('task_id')}, not {task_id}")
            )
        if stored is not None:
            changed = [k for k, v in stored[1].items() if kept.get(k) != v]
            if changed:
                problems.append(
                    Problem(run, seq, f"task {task_id} now differs from its record in {changed}")
                )
        expected_seq[run], prev[run] = seq + 1, digest
    for task_id, (run, _) in sorted(decided.items()):
        if task_id not in seen:
            problems.append(Problem(run, None, f"task {task_id} was decided but has no record"))
    return len(rows), problems


def _task_says(
    outcome: str, data: str | None, reviewer: str, comment: str | None, decided_at: float
) -> dict[str, Any]:
    """What a decided task row says of its decision, as its record would keep it."""
    return {
        "outcome": outcome,
        "data": None if data is None else json.loads(data),
        "reviewer": reviewer,
        "comment": comment,
        "decided_at": decided_at,
    }
