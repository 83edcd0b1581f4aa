"""The REST API and the web console over an App (``surestep serve``): the ``web`` extra.

Importing any part of this package without the extra fails at once with the pip line,
not later with a bare ImportError from deep inside a request::

    pip install 'surestep[web]'
"""

from __future__ import annotations

from importlib.util import find_spec

from surestep.errors import MissingDependencyError

INSTALL = "pip install 'surestep[web]'"


def _require(*modules: str) -> None:
    missing = [name for name in modules if find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"the surestep REST API and console need {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL}"
        )


_require("fastapi", "uvicorn", "jinja2", "markdown_it", "nh3")

from surestep.web.app import create_app, serve, server  # noqa: E402

__all__ = ["INSTALL", "create_app", "serve", "server"]
