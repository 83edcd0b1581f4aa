from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from surestep import (
    ConfigurationError,
    InputValidationError,
    OutputValidationError,
    SerializationError,
)
from surestep.serialization import Codec


class Summary(BaseModel):
    title: str
    words: int


@dataclasses.dataclass
class Chunk:
    text: str
    at: datetime


def test_pydantic_models_dataclasses_and_datetimes_round_trip() -> None:
    def step() -> tuple[Summary, Chunk]: ...

    codec = Codec(step)
    value = (Summary(title="t", words=3), Chunk("x", datetime(2024, 5, 1, 12, tzinfo=UTC)))
    text = codec.encode_result(value, "here")
    assert codec.decode_result(text, "here") == value


def test_unannotated_values_come_back_as_plain_json() -> None:
    def step():  # type: ignore[no-untyped-def]
        ...

    codec = Codec(step)
    text = codec.encode_result({"a": [1, 2.5, None, "s"]}, "here")
    assert codec.decode_result(text, "here") == {"a": [1, 2.5, None, "s"]}


def test_unserialisable_value_names_the_type_and_the_place() -> None:
    def step() -> Any: ...

    with pytest.raises(SerializationError) as caught:
        Codec(step).encode_result(object(), "output of step 'fetch' in run 'r1'")
    message = str(caught.value)
    assert "output of step 'fetch' in run 'r1'" in message and "object" in message


def test_arguments_round_trip_including_keyword_after_a_skipped_default() -> None:
    def wf(a: int, b: int = 1, c: datetime | None = None, *, d: str = "x") -> None: ...

    codec = Codec(wf)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    text = codec.encode_args((5,), {"c": when, "d": "y"}, "workflow 'wf'")
    args, kwargs = codec.decode_args(text, "workflow 'wf'")
    assert args == (5,) and kwargs == {"c": when, "d": "y"}


def test_unserialisable_argument_is_named() -> None:
    def wf(doc: Any) -> None: ...

    with pytest.raises(SerializationError) as caught:
        Codec(wf).encode_args((object(),), {}, "workflow 'wf'")
    assert "argument 'doc' of workflow 'wf'" in str(caught.value)


def test_wrong_arguments_are_refused_before_anything_is_stored() -> None:
    def wf(doc: str) -> None: ...

    with pytest.raises(SerializationError, match="missing a required argument"):
        Codec(wf).encode_args((), {}, "workflow 'wf'")


class Plain:
    """A class pydantic has no schema for."""


def test_an_output_that_does_not_match_names_the_fields_and_received_types() -> None:
    def step() -> Summary: ...

    with pytest.raises(OutputValidationError) as caught:
        Codec(step, "step 'summarize'").encode_result({"title": 3}, "output of step 'summarize'")
    assert caught.value.problems == (
        ("title", "Input should be a valid string", "int"),
        ("words", "Field required", "nothing"),
    )
    assert "does not match the return annotation Summary of step 'summarize'" in str(caught.value)


def test_a_matching_output_is_converted_before_it_is_stored() -> None:
    def step() -> Summary: ...

    codec = Codec(step)
    text = codec.encode_result({"title": "t", "words": "3"}, "here")
    assert text == '{"title":"t","words":3}'


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({1, 2}, "is a set"),
        (frozenset({"a"}), "is a frozenset"),
        (b"\xff", "is bytes"),
        ({1: "a"}, "at [1] is a dict key of type int"),
        (float("nan"), "the float nan"),
        ([{"k": {"x"}}], "at [0]['k'] is a set"),
    ],
)
def test_lossy_values_are_refused_where_nothing_says_how_to_store_them(
    value: Any, problem: str
) -> None:
    def step():  # type: ignore[no-untyped-def]
        ...

    with pytest.raises(SerializationError, match=re.escape(problem)):
        Codec(step).encode_result(value, "output of step 'tags'")


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (dict, {"tags": {"a"}}),
        (dict[str, Any], {"tags": {"a"}}),
        (list[Any], [b"x"]),
        (dict[str, Any] | None, {"n": float("inf")}),
        (tuple[int, Any], (1, {2})),
    ],
)
def test_untyped_places_inside_typed_containers_are_checked(annotation: Any, value: Any) -> None:
    def step() -> None: ...

    step.__annotations__["return"] = annotation
    with pytest.raises(SerializationError, match="Nothing says how to store it"):
        Codec(step).encode_result(value, "here")


def test_typed_sets_bytes_and_int_keys_round_trip_and_tuples_become_lists() -> None:
    def typed() -> tuple[set[int], bytes, dict[int, str]]: ...

    codec = Codec(typed)
    value = ({3, 1}, b"ab", {1: "a"})
    assert codec.decode_result(codec.encode_result(value, "here"), "here") == value

    def untyped():  # type: ignore[no-untyped-def]
        ...

    plain = Codec(untyped)
    assert plain.decode_result(plain.encode_result((1, "a"), "here"), "here") == [1, "a"]


def test_a_float_that_would_not_decode_again_is_refused() -> None:
    def step() -> float: ...

    with pytest.raises(SerializationError, match="does not decode again as float"):
        Codec(step).encode_result(float("nan"), "here")


def test_arguments_are_validated_and_converted() -> None:
    def wf(n: int, *rest: int, **options: str) -> None: ...

    codec = Codec(wf, "workflow 'wf'")
    text = codec.encode_args(("1", 2, "3"), {"mode": "fast"}, "workflow 'wf'")
    assert codec.decode_args(text, "workflow 'wf'") == ((1, 2, 3), {"mode": "fast"})
    with pytest.raises(InputValidationError, match=r"argument 'rest' of workflow 'wf'.*1: "):
        codec.encode_args((1, 2, "x"), {}, "workflow 'wf'")


def test_an_annotation_pydantic_cannot_handle_is_a_configuration_error() -> None:
    def step(doc: Plain) -> str: ...

    with pytest.raises(ConfigurationError) as caught:
        Codec(step, "step 'load'")
    message = str(caught.value)
    assert message.startswith("step 'load': parameter 'doc' Plain is a type surestep cannot")
    assert "pydantic model, a dataclass, or JSON types" in message

    def other() -> Plain: ...

    with pytest.raises(ConfigurationError, match="workflow 'w': the return annotation Plain"):
        Codec(other, "workflow 'w'")
