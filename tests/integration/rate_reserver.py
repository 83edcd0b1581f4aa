"""A process that reserves requests in the shared rate ledger as fast as it can.

``python rate_reserver.py URL WORKDIR INDEX KEYS EACH RPM`` opens the database at
``URL``, creates ``WORKDIR/ready-INDEX``, waits for ``WORKDIR/go`` (so that several of
these start reserving together), then for each of the keys ``model-0`` ..
``model-{KEYS-1}`` in turn makes ``EACH`` reservations with that ``RPM``, and prints one
JSON line: ``{"admitted": {key: N, ...}, "waits": [seconds, ...]}``.

Time is passed in, not read from the clock: reservation ``i`` of a key is made at
``START + i / 1000``, so all of a key's reservations fall in one window however slow
the machine is, and the outcome depends only on the ledger being shared and atomic.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from surestep.llm.limits import Admitted, RateLedger
from surestep.storage import open_store

START = 1_700_000_000.0
TOKENS = 10


def main() -> None:
    url, workdir, index, keys, each, rpm = sys.argv[1:]
    store = open_store(url)
    try:
        ledger = RateLedger(store)
        Path(workdir, f"ready-{index}").touch()
        go = Path(workdir, "go")
        deadline = time.monotonic() + 60
        while not go.exists():
            if time.monotonic() > deadline:
                raise SystemExit("no go within 60 s")
            time.sleep(0.001)
        admitted: dict[str, int] = {}
        waits: list[float] = []
        for k in range(int(keys)):
            key = f"model-{k}"
            admitted[key] = 0
            for i in range(int(each)):
                now = START + i / 1000
                outcome = ledger.reserve(key, rpm=int(rpm), tpm=None, tokens=TOKENS, now=now)
                if isinstance(outcome, Admitted):
                    admitted[key] += 1
                else:
                    waits.append(outcome.seconds)
        print(json.dumps({"admitted": admitted, "waits": waits}))
    finally:
        store.close()


if __name__ == "__main__":
    main()
