from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from surestep import App, FakeClock


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'surestep.db'}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def app(db_url: str, clock: FakeClock) -> Iterator[App]:
    app = App(db_url, clock=clock)
    yield app
    app.close()
