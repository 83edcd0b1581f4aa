"""JSON codec for inputs, outputs and step results. Never pickle.

Values are encoded with pydantic, so pydantic models, dataclasses, datetimes, UUIDs,
enums and the JSON-native types all work. Decoding uses the *annotations of the
function* that produced or consumes the value (a step's return annotation, a
workflow's parameter annotations), never a type name read from the database, so a
tampered database cannot make surestep import or build arbitrary objects.

The runtime hands the workflow the decoded form of what it stored even on the first
execution, so a run sees identical values live and on replay.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_json

from surestep.errors import SerializationError

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def dumps(value: Any, where: str) -> str:
    """Encode ``value`` as JSON text; ``where`` names it in the error message."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError as exc:
        raise SerializationError(
            f"{where} is not JSON-serialisable: {exc}. Return or pass JSON types, "
            f"pydantic models, dataclasses or datetimes instead"
        ) from None
    except (TypeError, ValueError) as exc:  # e.g. circular references
        raise SerializationError(f"{where} is not JSON-serialisable: {exc}") from None


def loads_raw(text: str | None) -> Any:
    """Decode stored JSON text without any type information (for display and the CLI)."""
    return None if text is None else json.loads(text)


class Codec:
    """Encodes and decodes one function's return value and arguments."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._name = getattr(fn, "__qualname__", repr(fn))
        try:
            hints = get_type_hints(fn)
        except Exception:  # unresolvable forward references: fall back to plain JSON
            hints = {}
        self._signature = inspect.signature(fn)
        returns = hints.get("return", Any)
        self._result = _ANY if returns is Any else TypeAdapter(returns)
        self._params = {
            name: TypeAdapter(hints[name]) if name in hints else _ANY
            for name in self._signature.parameters
        }

    def encode_result(self, value: Any, where: str) -> str:
        return dumps(value, where)

    def decode_result(self, text: str | None, where: str) -> Any:
        if text is None:
            return None
        try:
            return self._result.validate_json(text)
        except ValidationError as exc:
            raise SerializationError(
                f"{where}: the stored value no longer matches the return annotation of "
                f"{self._name}: {exc.errors()[0]['msg']}. Did the code change while the "
                f"run was in flight?"
            ) from None

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> str:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise SerializationError(f"{where}: {exc}") from None
        encoded = {}
        for name, value in bound.arguments.items():
            encoded[name] = json.loads(dumps(value, f"argument {name!r} of {where}"))
        return json.dumps(encoded, separators=(",", ":"))

    def decode_args(self, text: str, where: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        stored = json.loads(text)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        gap = False  # after a skipped (defaulted) parameter, later ones must go by keyword
        for name, param in self._signature.parameters.items():
            if name not in stored:
                gap = True
                continue
            adapter = self._params.get(name, _ANY)
            try:
                value = adapter.validate_python(stored[name])
            except ValidationError as exc:
                raise SerializationError(
                    f"argument {name!r} of {where} does not match its annotation: "
                    f"{exc.errors()[0]['msg']}"
                ) from None
            if param.kind is param.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is param.VAR_KEYWORD:
                kwargs.update(value)
            elif param.kind is param.KEYWORD_ONLY or (
                gap and param.kind is param.POSITIONAL_OR_KEYWORD
            ):
                kwargs[name] = value
            else:
                args.append(value)
        return tuple(args), kwargs
