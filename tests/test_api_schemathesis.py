"""The REST API against its own OpenAPI schema: schemathesis generates requests (valid
ones, and invalid ones) for every operation and sends them, with an operator's token and
with a reviewer's, to a real server on 127.0.0.1, on both databases. No answer may be a
5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from console_site import declare, serving

from surestep import App
from surestep.testing import drive

schemathesis = pytest.importorskip("schemathesis")
requests = pytest.importorskip("requests")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis import GenerationMode  # noqa: E402

EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}


@pytest.fixture
def api(app: App) -> Iterator[tuple[str, dict[str, str], dict[str, Any]]]:
    """The server, tokens of an operator and a reviewer, and the schema it serves."""
    declare(app)
    tokens = {
        "olga": app.users.add("olga", "operator"),
        "alice": app.users.add("alice", "reviewer", ["finance"]),
    }
    for n in range(3):
        app.start("invoice", str(n), run_id=f"fin-{n}")
    app.start("fragile", run_id="dl-1")
    drive(app, until=lambda: len(app.reviews.list()) == 3)
    with serving(app) as base:
        with httpx.Client(base_url=base, trust_env=False) as client:
            answer = client.get(
                "/api/openapi.json", headers={"Authorization": f"Bearer {tokens['olga']}"}
            )
        assert answer.status_code == 200
        yield base, tokens, answer.json()


def test_no_generated_request_gets_a_server_error(
    api: tuple[str, dict[str, str], dict[str, Any]],
) -> None:
    base, tokens, document = api
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/reviews", "/api/runs", "/api/me"}
    failures: list[str] = []
    with requests.Session() as session:
        session.trust_env = False  # 127.0.0.1 only, whatever the proxy settings say
        for who in ("olga", "alice"):
            headers = {"Authorization": f"Bearer {tokens[who]}"}
            for operation in operations:
                for mode, count in EXAMPLES.items():
                    failures += _exercise(operation, mode, count, base, session, headers)
    assert failures == [], "\n".join(failures[:20])


def _exercise(
    operation: Any,
    mode: Any,
    count: int,
    base: str,
    session: Any,
    headers: dict[str, str],
) -> list[str]:
    found: list[str] = []

    @hypothesis.settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure is reproducible
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        if response.status_code >= 500:
            found.append(
                f"{response.status_code} {case.method} {case.formatted_path} "
                f"query={case.query!r} body={case.body!r}: {response.text[:200]}"
            )

    try:
        send()
    except hypothesis.errors.Unsatisfiable:
        # No request of this mode fits the operation (a trigger's body is free-form, so
        # there is no invalid one to make): nothing to send, nothing to fail.
        if mode == GenerationMode.POSITIVE:
            raise
    return found
