"""Feast's local materialization engine, converting each distinct value once.

Feast's local engine turns every (entity, feature) value of a materialized table into a
protobuf `Value` in Python, one at a time, with a null check each: on a day of the default
shop that was 2.8 s of the 6.8 s `feast materialize` took (~450k values). Most values repeat
(counts, flags, categories, the snapshot timestamps), so this engine converts each distinct
value of a column once, with Feast's own converter, and lets the rows share it: the rows
handed to the online store are the ones Feast's engine builds (tests/test_feature_serving.py
compares the stored rows). Columns of lists (vectors) are converted as Feast does. Select it
in feature_store.yaml:

    batch_engine:
      type: recsys_feast.materialization.DistinctValuesLocalComputeEngine
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.dag.context import ExecutionContext
from feast.infra.compute_engines.local.arrow_table_value import ArrowTableValue
from feast.infra.compute_engines.local.compute import (
    LocalComputeEngine,
    LocalComputeEngineConfig,
)
from feast.infra.compute_engines.local.feature_builder import LocalFeatureBuilder
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.compute_engines.local.nodes import LocalOutputNode
from feast.infra.registry.base_registry import BaseRegistry
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import PYTHON_LIST_VALUE_TYPE_TO_PROTO_VALUE, python_values_to_proto_values
from feast.value_type import ValueType

from recsys_feast.internals import check_vector_lengths, coerce_datetime, engine_backend

ENGINE_TYPE = "recsys_feast.materialization.DistinctValuesLocalComputeEngine"
# list types whose Values are built from the numbers' bytes (`_packed_float_protos`): field 1
# of FloatList and DoubleList, packed little-endian
PACKED_FLOATS = {ValueType.FLOAT_LIST: "<f4", ValueType.DOUBLE_LIST: "<f8"}
# list types Feast converts by putting the list in the Value as it is
PLAIN_LISTS = {
    ValueType.STRING_LIST,
    ValueType.INT32_LIST,
    ValueType.INT64_LIST,
    ValueType.FLOAT_LIST,
    ValueType.DOUBLE_LIST,
}


def distinct_value_protos(column: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list:
    """Feast's `Value` of each entry of an Arrow `column`, from the numpy values Feast
    converts, each distinct value converted once by Feast's own converter. Numbers are told
    apart by their bits (0.0 from -0.0) and strings by Arrow's dictionary (a null apart from
    every string); lists of numbers or strings without null items are built from the
    column's flat values (`_plain_list_protos`); other columns (booleans with nulls, lists
    with null items) are converted entry by entry."""
    listed = _plain_list_protos(column, value_type)
    if listed is not None:
        return listed
    values = column.to_numpy(zero_copy_only=False)
    if len(values) and values.dtype.kind in "fiub":
        codes = np.ascontiguousarray(values).view(f"V{values.dtype.itemsize}")
    elif len(values) and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        codes = pc.dictionary_encode(column).indices.fill_null(-1).to_numpy(zero_copy_only=False)
    else:
        return python_values_to_proto_values(values, value_type)
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    converted = python_values_to_proto_values(values[first], value_type)
    return [converted[i] for i in inverse.ravel()]


def _plain_list_protos(
    column: pa.Array | pa.ChunkedArray, value_type: ValueType
) -> list[ValueProto] | None:
    """The Values Feast's generic list conversion builds (`<type>_list_val` holding the
    list; an empty Value for a missing list), for a list column of `PLAIN_LISTS` whose items
    are never null; None for any other column."""
    is_list = any(
        check(column.type)
        for check in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    )
    if value_type not in PLAIN_LISTS or not is_list:
        return None
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten()  # the items of the valid lists (a null list may hide some)
    if flat.null_count:  # Feast puts a default in place of each null item
        return None
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    proto_type, field, _ = PYTHON_LIST_VALUE_TYPE_TO_PROTO_VALUE[value_type]
    if value_type in PACKED_FLOATS and pa.types.is_floating(flat.type):
        return _packed_float_protos(flat, offsets, column.is_valid().to_pylist(), field, value_type)
    items = flat.to_pylist()
    return [
        ValueProto(**{field: proto_type(val=items[start:end])}) if valid else ValueProto()
        for start, end, valid in zip(
            offsets[:-1], offsets[1:], column.is_valid().to_pylist(), strict=True
        )
    ]


def _packed_float_protos(
    flat: pa.Array, offsets: list[int], valid: list[bool], field: str, value_type: ValueType
) -> list[ValueProto]:
    """The Values of float (or double) lists, parsed from their wire form built from the
    numbers' bytes: `Value{<field>: {val: [...]}}`, the list packed as protobuf packs it.
    The numbers are rounded to the list's type as protobuf rounds a Python float, so the
    Values are those Feast's conversion builds (tests/test_feature_serving.py), without a
    Python float per number: a day's 45k user vectors took 1.5 s that way."""
    with np.errstate(over="ignore"):  # a double beyond a float's range is inf, as protobuf has it
        numbers = flat.to_numpy(zero_copy_only=False).astype(PACKED_FLOATS[value_type])
    payload, width = numbers.tobytes(), numbers.itemsize
    value_tag = _varint((ValueProto.DESCRIPTOR.fields_by_name[field].number << 3) | 2)
    headers: dict[int, bytes] = {}  # by the list's bytes: most lists are as long as the next

    def header(size: int) -> bytes:
        if size not in headers:
            packed = b"\x0a" + _varint(size) if size else b""  # the list's field 1, packed
            headers[size] = value_tag + _varint(len(packed) + size) + packed
        return headers[size]

    parse = ValueProto.FromString
    return [
        parse(header((end - start) * width) + payload[start * width : end * width])
        if present
        else ValueProto()
        for start, end, present in zip(offsets[:-1], offsets[1:], valid, strict=True)
    ]


def _varint(number: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def table_to_rows(table: pa.Table, view: FeatureView, join_keys: dict[str, ValueType]) -> list:
    """The rows Feast's `_convert_arrow_to_proto` builds for a plain feature view: (entity
    key, {feature: Value}, event time, created time), each distinct value converted once."""
    check_vector_lengths(table, view)
    names = [field.name for field in view.features]
    kinds = [field.dtype.to_value_type() for field in view.features]
    protos = {
        name: distinct_value_protos(table.column(name), kind)
        for name, kind in [*zip(names, kinds, strict=True), *join_keys.items()]
    }
    keys = [
        EntityKeyProto(join_keys=list(join_keys), entity_values=[protos[k][i] for k in join_keys])
        for i in range(table.num_rows)
    ]
    features = [
        dict(zip(names, values, strict=True))
        for values in zip(*(protos[n] for n in names), strict=True)
    ]
    source = view.batch_source
    events = _timestamps(table, source.timestamp_field)
    created_column = source.created_timestamp_column
    created = _timestamps(table, created_column) if created_column else [None] * table.num_rows
    return list(zip(keys, features, events, created, strict=True))


def _timestamps(table: pa.Table, column: str) -> list:
    """A timestamp column as Feast coerces it, each distinct stamp once."""
    stamps = pd.to_datetime(table.column(column).to_numpy(zero_copy_only=False))
    codes, distinct = pd.factorize(stamps, use_na_sentinel=False)
    coerced = [coerce_datetime(value) for value in distinct]
    return [coerced[code] for code in codes]


class DistinctValuesOutputNode(LocalOutputNode):
    """Feast's local output node (online and offline writes), converting rows for the online
    store with `table_to_rows`; on-demand views keep Feast's own node."""

    def execute(self, context: ExecutionContext) -> ArrowTableValue:
        view = self.feature_view
        if getattr(view, "source_request_sources", None) is not None or (
            getattr(view, "source_feature_view_projections", None) is not None
        ):
            return super().execute(context)
        table = self.get_single_table(context).data
        output = ArrowTableValue(data=table)
        context.node_outputs[self.name] = output
        if table.num_rows and view.online:
            join_keys = {e.name: e.dtype.to_value_type() for e in view.entity_columns}
            size = context.repo_config.materialization_config.online_write_batch_size
            for batch in [table] if size is None else table.to_batches(max_chunksize=size):
                context.online_store.online_write_batch(
                    config=context.repo_config,
                    table=view,
                    data=table_to_rows(pa.table(batch), view, join_keys),
                    progress=lambda _: None,
                )
        if table.num_rows and view.offline:
            context.offline_store.offline_write_batch(
                config=context.repo_config, feature_view=view, table=table, progress=lambda _: None
            )
        return output


class _Builder(LocalFeatureBuilder):
    def build_output_nodes(self, view, input_node):
        node = DistinctValuesOutputNode("output", self.dag_root.view, inputs=[input_node])
        self.nodes.append(node)
        return node


class DistinctValuesLocalComputeEngineConfig(LocalComputeEngineConfig):
    """The local engine's settings under this engine's type name."""

    type: Literal[ENGINE_TYPE] = ENGINE_TYPE  # type: ignore[assignment]


class DistinctValuesLocalComputeEngine(LocalComputeEngine):
    """Feast's local compute engine whose output node converts each distinct value once."""

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs
    ) -> LocalMaterializationJob:
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        context = self.get_execution_context(registry, task)
        try:
            _Builder(registry, task, backend=engine_backend(self, context)).build().execute(context)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
        except Exception as error:  # reported through the job, as Feast's engine does
            return LocalMaterializationJob(
                job_id=job_id, status=MaterializationJobStatus.ERROR, error=error
            )
