"""Every ```python block of README.md and docs/*.md runs, against a temporary database.

The blocks of one file run in order in one namespace, as a reader would type them, in an
empty directory with ``SURESTEP_DATABASE_URL`` on a temporary SQLite file; then every
``test_*`` function they define is called, as pytest would (with ``tmp_path``).

Two conventions, in HTML comments (invisible on GitHub) right before a block:

- ``<!-- setup`` ... ``-->``: Python run before the block, for names a fragment assumes
  (a step defined elsewhere in the prose);
- ``<!-- no-run -->``: a block that cannot run by nature. Keep these rare.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_BLOCK = re.compile(
    r"(?:<!--\s*(?P<marker>no-run|setup\b(?P<setup>(?:(?!-->).)*))-->\s*\n)?"
    r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)


@dataclass
class Block:
    line: int
    code: str
    setup: str
    runs: bool


def blocks(document: Path) -> list[Block]:
    text = document.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        marker = match["marker"] or ""
        found.append(Block(line, match["code"], match["setup"] or "", marker != "no-run"))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_python_block_runs(
    document: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = blocks(document)
    if not found:
        pytest.skip(f"{document.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SURESTEP_DATABASE_URL", f"sqlite:///{tmp_path}/docs.db")
    namespace: dict[str, Any] = {"__name__": f"docs_{document.stem}"}
    try:
        for block in (b for b in found if b.runs):
            where = f"{document.name}:{block.line}"
            if block.setup.strip():
                exec(compile(block.setup, f"{where} (setup)", "exec", dont_inherit=True), namespace)
            # dont_inherit: the blocks run as a reader's file would, without this
            # module's `from __future__ import annotations` (pydantic models need that).
            exec(compile(block.code, where, "exec", dont_inherit=True), namespace)
        for name, function in list(namespace.items()):
            if name.startswith("test_") and inspect.isfunction(function):
                wanted = inspect.signature(function).parameters
                (tmp_path / name).mkdir()
                function(**({"tmp_path": tmp_path / name} if "tmp_path" in wanted else {}))
    finally:
        for value in namespace.values():
            if type(value).__name__ == "App" and hasattr(value, "close"):
                value.close()


def test_the_conventions_are_rare() -> None:
    skipped = [(d.name, b.line) for d in DOCUMENTS for b in blocks(d) if not b.runs]
    assert len(skipped) <= 2, skipped
