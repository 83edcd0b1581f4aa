"""Invoice review: extraction, then a person checks what the machine is unsure of.

Each invoice is extracted (a deterministic stand-in for OCR plus a model: each field
comes with a confidence). An amount above the approval limit, or a field read with low
confidence, goes to the finance team's review inbox with a 4-hour SLA that escalates to
the managers; everything else is booked straight away. A reviewer approves one invoice
and corrects another from the command line, and both runs finish, with nothing before
the review run again.

    python examples/invoice_review.py
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

import surestep
from surestep import App, State
from surestep.testing import drive

ROOT = Path(__file__).resolve().parent.parent
SURESTEP = [sys.executable, "-m", "surestep.cli"]
APPROVAL_LIMIT = Decimal("1000.00")
MIN_CONFIDENCE = 0.80

# What the scanner read from each document: (value, confidence) per field.
SCANS: dict[str, dict[str, tuple[str, float]]] = {
    "INV-001": {"vendor": ("Paper & Co", 0.99), "total": ("86.40", 0.97)},
    "INV-002": {"vendor": ("Heavy Machines Ltd", 0.98), "total": ("4800.00", 0.96)},
    "INV-003": {"vendor": ("Office Supplies AG", 0.95), "total": ("1,2O0.00", 0.41)},
}


class InvoiceFields(BaseModel):
    """What finance books: an edit in review must fit this form."""

    invoice_no: str
    vendor: str
    total: Decimal


def build(app: App) -> None:
    @app.step(name="extract")
    def extract(invoice_no: str) -> dict[str, object]:
        scan = SCANS[invoice_no]
        fields = {name: value for name, (value, _) in scan.items()}
        confidence = {name: score for name, (_, score) in scan.items()}
        return {"invoice_no": invoice_no, **fields, "confidence": confidence}

    @app.step(name="book")
    def book(invoice_no: str, vendor: str, total: str) -> str:
        return f"booked {invoice_no}: {total} to {vendor}"

    @app.workflow(name="process_invoice")
    def process_invoice(invoice_no: str) -> str:
        scanned = extract(invoice_no)
        confidence: dict[str, float] = scanned["confidence"]  # type: ignore[assignment]
        extracted = {name: value for name, value in scanned.items() if name != "confidence"}
        fields = InvoiceFields.model_validate(extracted) if _readable(extracted) else None
        lowest = min(confidence.values())
        if fields is not None and fields.total <= APPROVAL_LIMIT and lowest >= MIN_CONFIDENCE:
            return book(invoice_no, fields.vendor, str(fields.total))
        decision = surestep.request_review(
            extracted,
            kind="approve_invoice",
            groups=["finance"],
            priority=80 if fields is not None and fields.total > APPROVAL_LIMIT else 50,
            sla=timedelta(hours=4),
            escalate_to=["group:managers"],
            on_expiry="keep",
            form=InvoiceFields,
            proposal=extracted,
            confidence=lowest,
            instructions=_why(fields, confidence),
        )
        if not decision.approved:
            return f"rejected by {decision.reviewer}"
        checked: InvoiceFields = decision.data
        return book(checked.invoice_no, checked.vendor, str(checked.total))


def _readable(fields: dict[str, object]) -> bool:
    try:
        Decimal(str(fields["total"]))
    except ArithmeticError:
        return False
    return True


def _why(fields: InvoiceFields | None, confidence: dict[str, float]) -> str:
    unsure = [name for name, score in confidence.items() if score < MIN_CONFIDENCE]
    if unsure:
        return f"Low confidence on {', '.join(unsure)}: check against the PDF and correct."
    assert fields is not None
    return f"{fields.total} is above the {APPROVAL_LIMIT} limit: check the purchase order."


def cli(url: str, *args: str) -> None:
    print(f"$ surestep {shlex.join(args)}", flush=True)
    env = {**os.environ, "SURESTEP_DATABASE_URL": url}
    subprocess.run([*SURESTEP, *args], cwd=ROOT, env=env, check=True)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="surestep-invoices-"))
    url = f"sqlite:///{tmp / 'invoices.db'}"
    app = App(url)
    build(app)
    runs = {no: app.start("process_invoice", no, run_id=no) for no in SCANS}
    print(f"started {len(runs)} invoices in {tmp / 'invoices.db'}")

    parked = ("INV-002", "INV-003")
    drive(
        app,
        until=lambda: (
            runs["INV-001"].state == State.SUCCESS
            and all(runs[no].state == State.NEEDS_REVIEW for no in parked)
        ),
    )
    print(f"INV-001: {runs['INV-001'].result()} (no review needed)")
    print("INV-002 and INV-003 wait for review; their runs hold no worker meanwhile\n")

    cli(url, "review", "list", "--group", "finance")
    tasks = {t.run_id: t.id for t in app.reviews.list(group="finance")}
    cli(url, "review", "show", str(tasks["INV-003"]))
    cli(url, "review", "approve", str(tasks["INV-002"]), "--as", "alice", "--comment", "PO 7781")
    corrected = '{"invoice_no": "INV-003", "vendor": "Office Supplies AG", "total": "1200.00"}'
    cli(url, "review", "edit", str(tasks["INV-003"]), "--as", "bob", "--data", corrected,
        "--comment", "OCR read O for 0")  # fmt: skip

    drive(app, until=lambda: all(runs[no].state == State.SUCCESS for no in parked))
    for no in parked:
        print(f"{no} finished: {runs[no].state.value}: {runs[no].result()}")
    cli(url, "audit", "verify")
    app.close()


if __name__ == "__main__":
    main()
