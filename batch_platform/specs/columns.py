"""Column types of a spec: Iceberg/Spark type names -> Arrow types of the table declaration."""

from __future__ import annotations

import re

import pyarrow as pa

SIMPLE_TYPES: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),  # Iceberg timestamptz
    "timestamp_ntz": pa.timestamp("us"),  # Iceberg timestamp
}
DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)")
NOT_NULL = " not null"
TYPE_NAMES = ", ".join([*SIMPLE_TYPES, "decimal(p,s)"])


class ColumnTypeError(ValueError):
    pass


def parse_column(text: str) -> tuple[pa.DataType, bool]:
    """``"decimal(18,2) not null"`` -> (decimal128(18, 2), nullable=False)."""
    spec = " ".join(text.lower().split())
    nullable = not spec.endswith(NOT_NULL)
    name = spec.removesuffix(NOT_NULL).strip()
    if name in SIMPLE_TYPES:
        return SIMPLE_TYPES[name], nullable
    decimal = DECIMAL.fullmatch(name)
    if decimal:
        precision, scale = int(decimal[1]), int(decimal[2])
        if not 1 <= precision <= 38 or scale > precision:
            raise ColumnTypeError(f"decimal({precision},{scale}) needs 1 <= precision <= 38 and scale <= precision")
        return pa.decimal128(precision, scale), nullable
    raise ColumnTypeError(f"unknown type {text!r} (types: {TYPE_NAMES}; append 'not null' for a required column)")
