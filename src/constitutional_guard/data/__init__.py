"""Safety data: the record schema, file IO, sources, augmentation and splits."""

from constitutional_guard.data.io import read_records, write_records
from constitutional_guard.data.schema import (
    BINARY_LABELS,
    SPLITS,
    THREE_CLASS_LABELS,
    Record,
)

__all__ = ["BINARY_LABELS", "SPLITS", "THREE_CLASS_LABELS", "Record", "read_records", "write_records"]
