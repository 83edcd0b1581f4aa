"""A review task's instructions: Markdown, rendered and then sanitised.

markdown-it-py renders CommonMark with raw HTML switched off (a ``<script>`` in the text
comes out as text); nh3 (the Rust ``ammonia`` sanitiser) then keeps only the tags and
attributes listed here and only http, https and mailto links, as a second wall should a
renderer bug let something through. Instructions are written by workflow authors, but
they may quote a payload, and a payload may come from anyone.
"""

from __future__ import annotations

import functools

import nh3
from markdown_it import MarkdownIt

_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}


@functools.cache
def _renderer() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def instructions_html(text: str | None) -> str:
    """Safe HTML for ``text`` (empty for none)."""
    if not text:
        return ""
    return nh3.clean(
        _renderer().render(text),
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
