"""Database URLs as they may be shown: with any password replaced."""

from __future__ import annotations

import re


def redact(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``.

    >>> redact("postgresql://app:s3cret@db/prod")
    'postgresql://app:***@db/prod'
    """
    return re.sub(r"(://[^\s:/@]*:)[^\s@/]*@", r"\1***@", str(text))
