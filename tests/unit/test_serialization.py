from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from surestep import SerializationError
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
