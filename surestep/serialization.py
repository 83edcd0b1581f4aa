"""JSON codec for inputs, outputs and step results. Never pickle.

Values are encoded with pydantic, so pydantic models, dataclasses, datetimes, UUIDs,
enums and the JSON-native types all work. Decoding uses the *annotations of the
function* that produced or consumes the value (a step's return annotation, a
workflow's parameter annotations), never a type name read from the database, so a
tampered database cannot make surestep import or build arbitrary objects.

Encoding validates (and converts) the value against the same annotation first, so what
is stored always decodes again: a step's output that does not match its annotation is
an ``OutputValidationError`` (a failed attempt), a workflow argument that does not
match is an ``InputValidationError`` at ``start()``. Where nothing says how to store a
value (no annotation, ``Any``, the items of a bare ``dict``), a value that JSON would
silently change (a set, bytes, a non-string dict key, NaN) is refused.

The runtime hands the workflow the decoded form of what it stored even on the first
execution, so a run sees identical values live and on replay.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from typing import Any, get_args, get_origin, get_type_hints

from pydantic import PydanticUserError, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticSerializationError, core_schema, to_json

from surestep.errors import (
    ConfigurationError,
    InputValidationError,
    OutputValidationError,
    SerializationError,
)

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def dumps(value: Any, where: str) -> str:
    """Encode ``value`` as plain JSON text; ``where`` names it in the error message.

    Nothing types the value here (an event's payload, say), so a value that JSON would
    change (a set, bytes, ...) is refused rather than stored changed.
    """
    found = _lossy_untyped(value, "")
    if found is not None:
        raise SerializationError(
            f"{where}{_at(found[0])} is {found[1]}. Convert it to a JSON type first "
            f"(a list, a str, string keys)"
        )
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
    """Encodes and decodes one function's return value and arguments.

    ``label`` names the function in errors (``"step 'fetch'"``); an annotation pydantic
    cannot handle is a ``ConfigurationError`` here, at decoration, not at the first run.
    """

    def __init__(self, fn: Callable[..., Any], label: str | None = None) -> None:
        self._name = label or getattr(fn, "__qualname__", repr(fn))
        try:
            hints = get_type_hints(fn)
        except Exception:  # unresolvable forward references: fall back to plain JSON
            hints = {}
        self._signature = inspect.signature(fn)
        self._returns = hints.get("return", Any)
        self._result = self._adapter(self._returns, "the return annotation")
        # Most annotations (int, str, a model) leave no place untyped: no need to walk
        # every returned value looking for a set or bytes JSON would change.
        self._result_untyped = has_untyped(self._returns)
        self._params: dict[str, tuple[Any, TypeAdapter[Any]]] = {}
        for name, param in self._signature.parameters.items():
            hint = hints.get(name, Any)
            # *args and **kwargs are annotated per item; they are stored whole.
            if param.kind is param.VAR_POSITIONAL:
                hint = Any if hint is Any else tuple[hint, ...]  # type: ignore[valid-type]
            elif param.kind is param.VAR_KEYWORD:
                hint = Any if hint is Any else dict[str, hint]  # type: ignore[valid-type]
            self._params[name] = (hint, self._adapter(hint, f"parameter {name!r}"))

    def _adapter(self, annotation: Any, what: str) -> TypeAdapter[Any]:
        if annotation is Any:
            return _ANY
        try:
            return TypeAdapter(annotation)
        except PydanticUserError as exc:
            raise ConfigurationError(
                f"{self._name}: {what} {type_name(annotation)} is a type surestep cannot "
                f"store as JSON ({_first_sentence(exc)}). Annotate it with a pydantic "
                f"model, a dataclass, or JSON types (str, int, float, bool, None, list, "
                f"dict), or convert the value to one of those"
            ) from None

    def result_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the return value (what a reviewer may supply by hand)."""
        return _schema(self._result)

    def args_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the arguments, as an object keyed by parameter name."""
        properties: dict[str, Any] = {}
        definitions: dict[str, Any] = {}
        for name, (_, adapter) in self._params.items():
            schema = _schema(adapter)
            if schema is None:
                return None
            # References point at the root's $defs: hoist each parameter's there.
            definitions.update(schema.pop("$defs", {}))
            properties[name] = schema
        required = [
            name
            for name, param in self._signature.parameters.items()
            if param.default is param.empty
            and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
        ]
        found: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if definitions:
            found["$defs"] = definitions
        return found

    def encode_result(self, value: Any, where: str) -> str:
        """Validate (and convert) ``value`` against the return annotation, then encode it.

        A mismatch is an ``OutputValidationError``; a value that cannot be stored as
        JSON, or only lossily, is a ``SerializationError``.
        """
        return self.store_result(value, where)[0]

    def store_result(self, value: Any, where: str) -> tuple[str, Any]:
        """:meth:`encode_result`, and the value decoded from the stored text (what a
        replay will see), from the one decode that also checks the round trip."""
        if self._result is not _ANY:
            try:
                value = self._result.validate_python(value)
            except ValidationError as exc:
                problems = _problems(exc)
                raise OutputValidationError(
                    f"{where} does not match the return annotation "
                    f"{type_name(self._returns)} of {self._name}: {_describe(problems)}",
                    problems,
                ) from None
        return self._encode(self._returns, self._result, value, where, self._result_untyped)

    def _encode(
        self,
        annotation: Any,
        adapter: TypeAdapter[Any],
        value: Any,
        where: str,
        untyped: bool = True,
    ) -> tuple[str, Any]:
        """Encode a value that already matches ``annotation``, refusing lossy storage;
        return the text and the value decoded from it."""
        found = lossy(annotation, value) if untyped else None
        if found is not None:
            path, problem = found
            raise SerializationError(
                f"{where}{_at(path)} is {problem}. Nothing says how to store it: annotate it "
                f"(e.g. set[str], bytes, dict[int, str]) so it is stored and decoded as "
                f"that type, or convert it to a JSON type"
            )
        if adapter is _ANY:
            text = dumps(value, where)
            return text, json.loads(text)
        try:
            text = adapter.dump_json(value).decode()
        except PydanticSerializationError as exc:
            raise SerializationError(f"{where} is not JSON-serialisable: {exc}") from None
        try:  # e.g. NaN as a float: stored as null, which no longer decodes as a float
            return text, adapter.validate_json(text)
        except ValidationError as exc:
            raise SerializationError(
                f"{where} would be stored as {text[:80]}, which does not decode again as "
                f"{type_name(annotation)}: {_describe(_problems(exc))}"
            ) from None

    def decode_result(self, text: str | None, where: str) -> Any:
        if text is None:
            return None
        try:
            return self._result.validate_json(text)
        except ValidationError as exc:
            raise SerializationError(
                f"{where}: the stored value no longer matches the return annotation of "
                f"{self._name}: {_describe(_problems(exc))}. Did the code change while the "
                f"run was in flight? Restore the code it ran with, then `surestep retry` it"
            ) from None

    def encode_args(self, args: tuple[Any, ...], kwargs: dict[str, Any], where: str) -> str:
        """Bind, validate (and convert) and encode arguments; a mismatch is an
        ``InputValidationError`` naming the parameter."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InputValidationError(f"{where}: {exc}") from None
        encoded = {}
        for name, value in bound.arguments.items():
            annotation, adapter = self._params[name]
            place = f"argument {name!r} of {where}"
            if adapter is not _ANY:
                try:
                    value = adapter.validate_python(value)
                except ValidationError as exc:
                    raise InputValidationError(
                        f"{place} does not match its annotation {type_name(annotation)}: "
                        f"{_describe(_problems(exc))}"
                    ) from None
            encoded[name] = json.loads(self._encode(annotation, adapter, value, place)[0])
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
            adapter = self._params[name][1]
            try:
                value = adapter.validate_python(stored[name])
            except ValidationError as exc:
                raise SerializationError(
                    f"argument {name!r} of {where} no longer matches its annotation: "
                    f"{_describe(_problems(exc))}. Did the code change while the run was in "
                    f"flight? Restore the code it ran with, then `surestep retry` it"
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


def type_name(annotation: Any) -> str:
    """``Fields``, ``list[int]``: an annotation as its user wrote it."""
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _at(path: str) -> str:
    return f" at {path}" if path else ""


def _first_sentence(exc: Exception) -> str:
    # pydantic goes on to suggest arbitrary_types_allowed, which would not make the value
    # storable: keep only what it could not handle.
    return str(exc).splitlines()[0].split(". ")[0].rstrip(".")


def _problems(exc: ValidationError) -> tuple[tuple[str, str, str], ...]:
    """(field path, what is wrong, the type received) for each validation error."""
    found = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "(the value)"
        received = "nothing" if error["type"] == "missing" else type(error["input"]).__name__
        found.append((path, error["msg"], received))
    return tuple(found)


def _describe(problems: tuple[tuple[str, str, str], ...], limit: int = 5) -> str:
    text = "; ".join(f"{path}: {msg} (received {got})" for path, msg, got in problems[:limit])
    more = len(problems) - limit
    return text + (f"; and {more} more" if more > 0 else "")


_UNTYPED = (Any, object)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
    collections.abc.Set,
)


def has_untyped(annotation: Any) -> bool:
    """Whether ``annotation`` leaves any place untyped, where :func:`lossy` must look."""
    if annotation in _UNTYPED:
        return True
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return has_untyped(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(has_untyped(arm) for arm in args)
    if (origin or annotation) in _MAPPINGS + _SEQUENCES:
        return not args or any(has_untyped(arg) for arg in args if arg is not Ellipsis)
    return False


def lossy(annotation: Any, value: Any, path: str = "") -> tuple[str, str] | None:
    """Where ``value`` sits in a place that ``annotation`` leaves untyped (``Any``, a bare
    ``dict``'s items, ...) and JSON would change it, return (path, what it is).

    Typed places are the annotation's business: an annotated ``set[int]`` round-trips.
    Models and dataclasses are not looked into: their own fields say how they store.
    """
    if annotation in _UNTYPED:
        return _lossy_untyped(value, path)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            kind = get_origin(arm) or (arm if arm in _MAPPINGS + _SEQUENCES else _Never)
            if arm in _UNTYPED or isinstance(value, kind):
                found = lossy(arm, value, path)
                if found is not None:
                    return found
        return None
    if origin is typing.Annotated:
        return lossy(args[0], value, path)
    container = origin or annotation
    if container in _MAPPINGS and isinstance(value, dict):
        keys, items = args if len(args) == 2 else (Any, Any)
        for key, item in value.items():
            if keys in _UNTYPED and not isinstance(key, str):
                return f"{path}[{key!r}]", _KEY_PROBLEM.format(type(key).__name__)
            found = lossy(items, item, f"{path}[{key!r}]")
            if found is not None:
                return found
        return None
    if container in _SEQUENCES and isinstance(value, (list, tuple, set, frozenset)):
        if container is tuple and args and args[-1] is not Ellipsis:
            kinds = list(args)
        else:
            kinds = [args[0] if args else Any] * len(value)
        for index, (kind, item) in enumerate(zip(kinds, value, strict=False)):
            found = lossy(kind, item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class _Never:
    pass


_KEY_PROBLEM = "a dict key of type {} (JSON keys are strings: it would come back as a str)"


def _lossy_untyped(value: Any, path: str) -> tuple[str, str] | None:
    if isinstance(value, (set, frozenset)):
        kind = type(value).__name__
        return path, f"a {kind} (stored as a list in no stable order; it would come back as a list)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return path, f"{type(value).__name__} (it would come back as a str, if it decodes)"
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"the float {value} (JSON has no NaN or infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}]", _KEY_PROBLEM.format(type(key).__name__)
            found = _lossy_untyped(item, f"{path}[{key!r}]")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _lossy_untyped(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class _StrictSchema(GenerateJsonSchema):
    """JSON Schemas that refuse what pydantic would refuse, where pydantic's defaults are
    looser (a Decimal's string form gets its pattern), for checking reviewers' edits in
    a process that does not import the workflow's types."""

    def get_decimal_pattern(self, schema: core_schema.DecimalSchema) -> str | None:
        return self.build_decimal_pattern(schema)


def json_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The JSON Schema of what ``adapter`` accepts."""
    return adapter.json_schema(schema_generator=_StrictSchema)


def _schema(adapter: TypeAdapter[Any]) -> dict[str, Any] | None:
    try:
        return json_schema(adapter)
    except PydanticUserError:  # a type with no JSON Schema (a callable, say)
        return None
