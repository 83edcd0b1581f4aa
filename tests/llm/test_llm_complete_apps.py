"""``surestep.llm.complete`` without ``app=`` when several Apps could make the call: it
refuses to guess, since the call is recorded and budgeted in that App's database."""

from __future__ import annotations

from pathlib import Path

import pytest

from surestep import App, ConfigurationError
from surestep.llm import complete


def test_a_predefined_provider_with_several_apps_needs_app(tmp_path: Path) -> None:
    first = App(f"sqlite:///{tmp_path / 'one.db'}")
    second = App(f"sqlite:///{tmp_path / 'two.db'}")
    try:
        for app in (first, second):  # each has prices of its own: each has a model kit
            app.llm_price("openai:gpt-4o-mini", input_per_mtok=1, output_per_mtok=1)
        # Neither App has used "openai" yet; before, one of them was picked at random.
        with pytest.raises(ConfigurationError, match="pass app="):
            complete("openai:gpt-4o-mini", "hello")
    finally:
        first.close()
        second.close()


def test_a_provider_no_app_declares_is_named(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path / 'one.db'}")
    try:
        with pytest.raises(ConfigurationError, match="no App declares the provider 'nowhere'"):
            complete("nowhere:model", "hello")
    finally:
        app.close()
