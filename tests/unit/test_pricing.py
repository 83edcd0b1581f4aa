"""PriceBook: genai-prices' bundled data, user overrides, unknown models, estimates, and
no network at any point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import genai_prices
import pytest

from surestep.errors import ConfigurationError
from surestep.llm.pricing import (
    DEFAULT_ESTIMATED_OUTPUT_TOKENS,
    PriceBook,
    PriceQuote,
    estimate_input_tokens,
)
from surestep.llm.types import Usage

VERSION = f"genai-prices {genai_prices.__version__}"
MILLION = 1_000_000


def test_the_pinned_version_is_the_one_installed() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text("utf-8")
    assert f'"genai-prices=={genai_prices.__version__}"' in pyproject
    assert VERSION == "genai-prices 0.2.3"


def test_a_known_openai_model() -> None:
    book = PriceBook()
    # gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
    quote = book.cost("openai", "openai", "gpt-4o-mini", Usage(MILLION, MILLION))
    assert quote == PriceQuote(usd=pytest.approx(0.75), priced=True, version=VERSION)
    small = book.cost("openai", "openai", "gpt-4o-mini", Usage(2_000, 500))
    assert small.usd == pytest.approx((2_000 * 0.15 + 500 * 0.60) / MILLION)


def test_a_known_anthropic_model() -> None:
    quote = PriceBook().cost("anthropic", "anthropic", "claude-3-5-haiku-latest", Usage(MILLION, 0))
    assert quote == PriceQuote(usd=pytest.approx(0.80), priced=True, version=VERSION)


def test_the_provider_name_is_not_the_price_list() -> None:
    # A provider the App calls "work" may be OpenAI underneath: pricing_id decides.
    quote = PriceBook().cost("work", "openai", "gpt-4o-mini", Usage(MILLION, 0))
    assert quote.usd == pytest.approx(0.15)


def test_unknown_model_costs_nothing_and_says_so() -> None:
    book = PriceBook()
    assert book.cost("openai", "openai", "no-such-model-x1", Usage(10, 10)) == PriceQuote(
        0.0, False, VERSION
    )
    assert book.cost("p", "no-such-provider", "gpt-4o-mini", Usage(10, 10)) == PriceQuote(
        0.0, False, VERSION
    )
    # No price list at all (a local model): nothing was consulted.
    assert book.cost("local", None, "llama3.1", Usage(10, 10)) == PriceQuote(0.0, False, "unpriced")


def test_override_prices_a_local_model_and_beats_genai_prices() -> None:
    book = PriceBook()
    book.set_price("local:llama3.1", input_per_mtok=0, output_per_mtok=0)
    assert book.cost("local", None, "llama3.1", Usage(MILLION, MILLION)) == PriceQuote(
        0.0, True, "override"
    )
    book.set_price("openai:gpt-4o-mini", input_per_mtok=1.5, output_per_mtok=2)
    quote = book.cost("openai", "openai", "gpt-4o-mini", Usage(MILLION // 2, MILLION))
    assert quote == PriceQuote(usd=pytest.approx(2.75), priced=True, version="override")
    # Overrides belong to one book (one App), not to the process.
    other = PriceBook().cost("openai", "openai", "gpt-4o-mini", Usage(MILLION, 0))
    assert other.version == VERSION


@pytest.mark.parametrize(
    ("ref", "prices", "words"),
    [
        ("llama3.1", (0, 0), "'<provider>:<model>'"),
        ("local:", (0, 0), "'<provider>:<model>'"),
        ("local:m", (-1, 0), "input_per_mtok"),
        ("local:m", (0, float("nan")), "output_per_mtok"),
    ],
)
def test_bad_overrides(ref: str, prices: tuple[float, float], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        PriceBook().set_price(ref, input_per_mtok=prices[0], output_per_mtok=prices[1])


def test_estimate_from_characters_and_max_tokens() -> None:
    messages = [
        {"role": "system", "content": "x" * 400},
        {"role": "user", "content": [{"type": "text", "text": "y" * 399}]},
    ]
    assert estimate_input_tokens(messages) == 200  # 799 characters / 4, rounded up
    book = PriceBook()
    quote = book.estimate("openai", "openai", "gpt-4o-mini", messages, max_tokens=100)
    assert quote.usd == pytest.approx((200 * 0.15 + 100 * 0.60) / MILLION)
    default = book.estimate("openai", "openai", "gpt-4o-mini", messages)
    assert default.usd == pytest.approx(
        (200 * 0.15 + DEFAULT_ESTIMATED_OUTPUT_TOKENS * 0.60) / MILLION
    )


def test_without_genai_prices_nothing_is_priced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # what `import` sees when absent
    book = PriceBook()
    quote = book.cost("openai", "openai", "gpt-4o-mini", Usage(MILLION, MILLION))
    assert quote == PriceQuote(0.0, False, "unpriced")
    book.set_price("local:m", input_per_mtok=1, output_per_mtok=1)
    assert book.cost("local", None, "m", Usage(MILLION, 0)).usd == pytest.approx(1.0)


def test_pricing_opens_no_connection() -> None:
    """In a fresh interpreter, an audit hook fails any socket use (getaddrinfo, connect)
    while genai-prices is imported and prices calls: its data is bundled, and only its
    UpdatePrices fetches, which surestep never calls."""
    script = textwrap.dedent(
        """
        import sys

        def no_network(event, args):
            if event.startswith("socket."):
                raise RuntimeError(f"network use: {event} {args!r}")

        sys.addaudithook(no_network)
        from surestep.llm.pricing import PriceBook
        from surestep.llm.types import Usage

        book = PriceBook()
        assert book.cost("openai", "openai", "gpt-4o-mini", Usage(10, 10)).priced
        assert book.cost("anthropic", "anthropic", "claude-3-5-haiku-latest", Usage(1, 1)).priced
        assert not book.cost("openai", "openai", "no-such-model", Usage(1, 1)).priced
        print("priced offline")
        """
    )
    root = Path(__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "priced offline"


def test_the_audit_hook_would_see_a_connection() -> None:
    """The check above can fail: the same hook stops a connection attempt."""
    script = textwrap.dedent(
        """
        import socket, sys

        def no_network(event, args):
            if event.startswith("socket."):
                raise RuntimeError(f"network use: {event}")

        sys.addaudithook(no_network)
        socket.create_connection(("127.0.0.1", 9), timeout=1)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "network use: socket." in done.stderr
