"""The examples run, and show what they claim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_order_saga_refunds_then_releases() -> None:
    done = subprocess.run(
        [sys.executable, "examples/order_saga.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "ended in state failed" in out
    order = [
        out.index(line)
        for line in ("reserved SKU-42", "charged 4999", "refunded 4999", "released SKU-42")
    ]
    assert order == sorted(order)  # undone in reverse order: refund, then release
    assert "refund_payment: undone" in out and "release_inventory: undone" in out
    assert "confirmed" not in out
