"""Creating tables from their declaration and evolving them when the declaration changes."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC, PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
)

from batch_platform.lake.errors import SchemaEvolutionError
from batch_platform.lake.tables import LakeTable


def iceberg_schema(table: LakeTable) -> Schema:
    """The declared Arrow schema as an Iceberg schema with fresh field ids, every column optional.

    Spark writes every Parquet column as optional and pyiceberg's add_files refuses optional files for required
    columns, so NOT NULL is a contract the lake checks before each commit (see ``not_null_columns``), not an
    Iceberg ``required`` flag.
    """
    optional = pa.schema([pa.field(f.name, f.type, True, f.metadata) for f in table.schema])
    return assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(optional))


def not_null_columns(table: LakeTable) -> list[str]:
    return [f.name for f in table.schema if not f.nullable]


def partition_spec(table: LakeTable, schema: Schema) -> PartitionSpec:
    if table.partition_column is None:
        return UNPARTITIONED_PARTITION_SPEC
    source = schema.find_field(table.partition_column)
    return PartitionSpec(
        PartitionField(
            source_id=source.field_id,
            field_id=1000,
            transform=IdentityTransform(),
            name=table.partition_column,
        )
    )


def _is_safe_promotion(current: IcebergType, declared: IcebergType) -> bool:
    if isinstance(current, IntegerType) and isinstance(declared, LongType):
        return True
    if isinstance(current, FloatType) and isinstance(declared, DoubleType):
        return True
    return (
        isinstance(current, DecimalType)
        and isinstance(declared, DecimalType)
        and current.scale == declared.scale
        and declared.precision >= current.precision
    )


def evolve(iceberg_table: Table, table: LakeTable) -> Table:
    """Bring an existing table in line with its declaration.

    New nullable columns are added and safe type promotions (int to long, float to double, wider decimal) applied.
    Anything else, a changed type, a new required column, a changed partition column, raises SchemaEvolutionError
    naming the column and both sides, and leaves the table untouched. Columns dropped from the declaration stay in
    the table (readers of old snapshots need them) and are written as nulls.
    """
    declared = iceberg_schema(table)
    current = iceberg_table.schema()
    additions: list[NestedField] = []
    promotions: list[tuple[str, IcebergType]] = []
    problems: list[str] = []
    current_fields = {f.name: f for f in current.fields}
    for field in declared.fields:
        existing = current_fields.get(field.name)
        if existing is None:
            if field.name in not_null_columns(table):
                problems.append(
                    f"new column {field.name!r} ({field.field_type}) must be nullable to be added: existing rows have "
                    "no value for it"
                )
            else:
                additions.append(field)
            continue
        if existing.field_type == field.field_type:
            continue
        if _is_safe_promotion(existing.field_type, field.field_type):
            promotions.append((field.name, field.field_type))
        else:
            problems.append(
                f"column {field.name!r}: table has type {existing.field_type}, declaration has {field.field_type}"
            )
    current_spec = [f.name for f in iceberg_table.spec().fields]
    wanted_spec = [table.partition_column] if table.partition_column else []
    if current_spec != wanted_spec:
        problems.append(f"partitioning: table is partitioned by {current_spec}, declaration by {wanted_spec}")
    if problems:
        raise SchemaEvolutionError(
            f"incompatible change to table {table.identifier}: " + "; ".join(problems) + ". The table was not changed."
        )
    if additions or promotions:
        with iceberg_table.update_schema() as update:
            for field in additions:
                update.add_column(field.name, field.field_type, doc=field.doc)
            for name, new_type in promotions:
                update.update_column(name, field_type=new_type)
    return iceberg_table


def ensure_table(catalog: Catalog, table: LakeTable) -> Table:
    """Load the declared table, creating it (and its namespace) on first use and evolving it if it changed."""
    try:
        iceberg_table = catalog.load_table(table.identifier)
    except NoSuchTableError:
        catalog.create_namespace_if_not_exists(table.namespace)
        schema = iceberg_schema(table)
        iceberg_table = catalog.create_table_if_not_exists(
            table.identifier,
            schema=schema,
            partition_spec=partition_spec(table, schema),
            properties=table.table_properties,
        )
    iceberg_table = evolve(iceberg_table, table)
    return apply_table_properties(iceberg_table, table)


def apply_table_properties(iceberg_table: Table, table: LakeTable) -> Table:
    """Set the declared properties (the lake's defaults included) the table does not have yet, in one commit.

    Called whenever a table is loaded for a write and by maintenance, so that a table created before a default
    changed gets it at its next write or maintenance run, whichever comes first.
    """
    missing_props = {k: v for k, v in table.table_properties.items() if iceberg_table.properties.get(k) != v}
    if missing_props:
        with iceberg_table.transaction() as tx:
            tx.set_properties(missing_props)
    return iceberg_table


def arrow_schema_of(iceberg_table: Table) -> pa.Schema:
    """The current table schema as Arrow, without Iceberg's field-id metadata."""
    schema = iceberg_table.schema().as_arrow()
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])
