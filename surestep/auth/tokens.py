"""API tokens: made, hashed and compared. Pure but for the random source.

A token is 32 random bytes (256 bits) in URL-safe base64 after a recognisable prefix,
so a leaked one is easy to spot in a log or a repository scan. Only its SHA-256 is
stored: with that much entropy a slow, salted hash would add nothing (there is no
dictionary to try), and one hash lets the database find a token's user by an index.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "sst_"
#: Longer than any token we make; anything longer is refused before it is hashed.
MAX_LENGTH = 128


def new_token() -> str:
    """A fresh token, e.g. ``sst_Vq3...``: shown once, never stored."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What is stored of a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def plausible(token: object) -> bool:
    """Whether ``token`` could be one of ours (refused without a database lookup if not)."""
    return isinstance(token, str) and token.startswith(PREFIX) and len(token) <= MAX_LENGTH


def matches(token: str, stored: str) -> bool:
    """Whether ``token`` is the one whose digest is ``stored``, in constant time."""
    return hmac.compare_digest(digest(token), stored)
