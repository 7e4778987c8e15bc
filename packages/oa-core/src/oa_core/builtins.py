"""Built-in plugin of oa-core: the native formats, whose rows already are core records."""

from __future__ import annotations

from oa_core.extensions import DatasetFormat
from oa_core.hookspecs import hookimpl
from oa_core.schema import RECORD_TYPES


def _native(record_type):
    fields = tuple(f for f in record_type.model_fields if f != "kind")
    return DatasetFormat(
        record_type=record_type,
        parse=lambda row: {k: v for k, v in row.items() if k != "kind"},
        fields=fields,
        description=f"rows are {record_type.__name__} records ({', '.join(fields)})",
    )


@hookimpl
def register_dataset_formats(register):
    for kind, record_type in RECORD_TYPES.items():
        register(f"oa.{kind}", _native(record_type))
