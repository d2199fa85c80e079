"""Which Arrow column types a Delta column can take, for schema changes arriving mid-stream.

A new column is fine (the sink merges schemas), and so are the widenings Avro's schema
resolution allows (int to long, float to double); any other type change would fail the whole
commit, so its records are sent to the dead-letter table instead, before anything is written.
"""

from __future__ import annotations

import pyarrow as pa

_WIDENINGS = {(pa.int32(), pa.int64()), (pa.float32(), pa.float64())}


def _normalised(arrow_type: pa.DataType) -> pa.DataType:
    """deltalake reports strings and binaries as their large/view forms; compare by kind."""
    if (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or (pa.types.is_string_view(arrow_type))
    ):
        return pa.string()
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or (pa.types.is_binary_view(arrow_type))
    ):
        return pa.binary()
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.list_(_normalised(arrow_type.value_type))
    return arrow_type


def _fits(new: pa.DataType, have: pa.DataType) -> bool:
    new, have = _normalised(new), _normalised(have)
    if pa.types.is_timestamp(new) and pa.types.is_timestamp(have):
        return True  # units and zones are made the lake's (us, UTC) on the way in
    return new == have or (new, have) in _WIDENINGS


def conflicts(new: pa.Schema, have: pa.Schema, what: str) -> list[str]:
    """Columns of `new` that `have` (a table's or a batch's schema) cannot take."""
    existing = {field.name: field.type for field in have}
    return [
        f"{field.name} is {field.type}, {what} has {existing[field.name]}"
        for field in new
        if field.name in existing and not _fits(field.type, existing[field.name])
    ]
