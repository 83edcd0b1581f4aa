"""The order saga: reserve inventory -> charge payment -> ship -> confirm.

Shipping fails for good (the address does not exist), so the run undoes what it did, in
reverse order: the charge is refunded, then the reservation released. Each undo is a
checkpointed step with its own retries; `surestep show` prints what was undone.

    python examples/order_saga.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from surestep import App, Retry, RunFailedError
from surestep.testing import run_workflow


def build(app: App, log: list[str]) -> object:
    @app.step(name="release_inventory", retry=Retry(max_attempts=5, initial_delay=0.1))
    def release_inventory(order_id: str, sku: str) -> None:
        log.append(f"inventory: released {sku} for {order_id}")

    @app.step(name="refund_payment", retry=Retry(max_attempts=5, initial_delay=0.1))
    def refund_payment(order_id: str, amount_cents: int) -> None:
        log.append(f"payments: refunded {amount_cents} cents for {order_id}")

    @app.step(name="reserve_inventory", compensate=release_inventory)
    def reserve_inventory(order_id: str, sku: str) -> str:
        log.append(f"inventory: reserved {sku} for {order_id}")
        return f"res-{order_id}"

    @app.step(name="charge_payment", compensate=refund_payment)
    def charge_payment(order_id: str, amount_cents: int) -> str:
        log.append(f"payments: charged {amount_cents} cents for {order_id}")
        return f"ch-{order_id}"

    @app.step(name="ship", retry=Retry(give_up_on=(ValueError,)))
    def ship(order_id: str, address: str) -> str:
        raise ValueError(f"carrier rejected the address {address!r}")

    @app.step(name="confirm")
    def confirm(order_id: str) -> None:
        log.append(f"email: order {order_id} confirmed")

    @app.workflow(name="order", version="1")
    def order(order_id: str, sku: str, amount_cents: int, address: str) -> str:
        reserve_inventory(order_id, sku)
        charge_payment(order_id, amount_cents)
        tracking = ship(order_id, address)
        confirm(order_id)
        return tracking

    return order


def main() -> None:
    database = Path(tempfile.mkdtemp(prefix="surestep-saga-")) / "orders.db"
    url = f"sqlite:///{database}"
    app = App(url)
    log: list[str] = []
    order = build(app, log)
    handle = run_workflow(app, order, "A-1001", "SKU-42", 4999, "Nowhere 0", run_id="A-1001")
    try:
        handle.result()
    except RunFailedError as error:
        print(f"run ended: {error}\n")
    print("what the outside world saw, in order:")
    for line in log:
        print(f"  {line}")
    app.close()
    print()
    subprocess.run(
        [sys.executable, "-m", "surestep.cli", "show", "A-1001", "--db", url], check=True
    )


if __name__ == "__main__":
    main()
