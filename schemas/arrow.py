"""Derive an Arrow schema from a pydantic model, so a stored column cannot drift from its model.

The mapping is deliberately small: the event models use only these types.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel

__all__ = ["arrow_schema", "arrow_type"]

_SCALARS: dict[Any, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """Arrow type of a field annotation and whether it is nullable."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return arrow_type(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {annotation!r}")
        inner, _ = arrow_type(args[0])
        return inner, True
    if origin is Literal:
        values = typing.get_args(annotation)
        return arrow_type(type(values[0]))[0], False
    if origin in (list, tuple):
        inner, _ = arrow_type(typing.get_args(annotation)[0])
        return pa.list_(pa.field("item", inner, nullable=False)), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    fields = []
    for name, info in model.model_fields.items():
        dtype, nullable = arrow_type(info.annotation)
        fields.append(pa.field(name, dtype, nullable=nullable))
    return pa.schema(fields)
