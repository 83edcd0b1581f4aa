"""The examples run, and show what they claim."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_example(*argv: str, timeout: float) -> str:
    """Run an example as a process from the repository root; its stdout."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_order_saga_refunds_then_releases() -> None:
    out = run_example("examples/order_saga.py", timeout=60)
    assert "ended in state failed" in out
    order = [
        out.index(line)
        for line in ("reserved SKU-42", "charged 4999", "refunded 4999", "released SKU-42")
    ]
    assert order == sorted(order)  # undone in reverse order: refund, then release
    assert "refund_payment: undone" in out and "release_inventory: undone" in out
    assert "confirmed" not in out


def test_the_invoice_review_books_one_and_reviews_two_from_the_cli() -> None:
    out = run_example("examples/invoice_review.py", timeout=120)
    assert "INV-001: booked INV-001: 86.40 to Paper & Co (no review needed)" in out
    inbox = out[out.index("$ surestep review list") : out.index("$ surestep review show")]
    assert "INV-002" in inbox and "INV-003" in inbox and "INV-001" not in inbox
    assert "group:finance" in inbox and "0.41" in inbox
    shown = out[out.index("$ surestep review show") : out.index("$ surestep review approve")]
    assert "Low confidence on total" in shown and "escalates to  group:managers" in shown
    # Task ids follow the order in which the in-process worker parked the two runs.
    assert re.search(r"review task \d+ decided: approve \(by alice\)", out)
    assert re.search(r"review task \d+ decided: edit \(by bob\)", out)
    for line in (
        "INV-002 finished: success: booked INV-002: 4800.00 to Heavy Machines Ltd",
        "INV-003 finished: success: booked INV-003: 1200.00 to Office Supplies AG",
        "2 decision record(s) checked: the log is intact",
    ):
        assert line in out, line


@pytest.mark.slow
def test_the_demo_ends_with_a_command_that_works_as_printed() -> None:
    printed = run_example("examples/demo.py", timeout=120).strip().splitlines()[-1].strip()

    # As a reader would paste it: in the project's directory, with no virtualenv active.
    path = os.pathsep.join(
        part for part in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in part
    )
    ran = subprocess.run(
        printed, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": path, "COLUMNS": "200"},
    )  # fmt: skip
    assert ran.returncode == 0, (printed, ran.stderr)
    assert "doc-07" in ran.stdout and "success" in ran.stdout


def test_batch_summarize_survives_the_chaos_model_server() -> None:
    out = run_example("examples/batch_summarize.py", "--docs", "20", timeout=300)
    found = re.search(r"20 documents: (\{.*\})", out)
    assert found, out
    states = ast.literal_eval(found.group(1))
    # Nothing is lost: every document is summarized or waits for a person.
    assert sum(states.values()) == 20
    assert set(states) <= {"success", "needs_review"}
    assert "model calls; outcomes" in out and "per summarized document $" in out
