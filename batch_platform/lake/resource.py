"""The lake resource: the one object assets use to read and write Iceberg tables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, field_validator, model_validator
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyspark.sql import Column, DataFrame, SparkSession

from batch_platform.lake import spark_io
from batch_platform.lake.commit import Lineage, WriteResult, commit_replace, partition_filter
from batch_platform.lake.errors import DataContractError
from batch_platform.lake.schema import arrow_schema_of, ensure_table
from batch_platform.lake.selection import PartitionSelection, iceberg_filter
from batch_platform.lake.tables import LakeTable
from batch_platform.settings import data_dir
from batch_platform.test_hooks import pause_point

CATALOG_TYPES = ("sql", "glue", "rest")


class IcebergLakeResource(dg.ConfigurableResource):
    """Iceberg tables through pyiceberg, with a SQL (SQLite or PostgreSQL), Glue or REST catalog.

    With nothing configured it is a SQLite catalog and a file warehouse in the local data folder, so a laptop needs
    nothing running. Production sets ``catalog_type``, ``catalog_uri``, ``warehouse``, ``region`` and the endpoint
    overrides from ``dg.EnvVar`` (see ``resources.prod_resources``), all resolved when a run starts. Every string
    field is a plain ``str`` so that it can be an EnvVar; an empty value means "not set". AWS credentials are never
    configured here: pyiceberg's Glue client and S3 file IO use the default AWS credential chain.
    """

    catalog_type: str = Field(default="sql", description="pyiceberg catalog type: sql, glue or rest")
    catalog_name: str = Field(default="lake", description="catalog name, recorded in the catalog tables")
    catalog_uri: str | None = Field(
        default=None,
        description="SQLAlchemy URI for sql (postgresql+psycopg2://...), endpoint for rest; default SQLite",
    )
    warehouse: str | None = Field(default=None, description="warehouse root, file:///... or s3://bucket/prefix")
    data_dir: str | None = Field(default=None, description="local data folder for the default catalog and warehouse")
    catalog_properties: dict[str, str] = Field(default_factory=dict, description="extra pyiceberg catalog properties")
    commit_attempts: int = Field(default=10, description="commits retried on a refreshed table, beyond pyiceberg's")
    region: str | None = Field(
        default=None,
        description="AWS region of the Glue catalog and the S3 warehouse (pyiceberg client.region); empty: not set",
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3 endpoint override (S3-compatible stores, tests); empty on AWS"
    )
    glue_endpoint: str | None = Field(default=None, description="Glue endpoint override (tests); empty on AWS")
    allow_local_defaults: bool = Field(
        default=True,
        description="without warehouse (or sql catalog_uri), fall back to the local folder; production turns it off",
    )

    _catalog: Catalog | None = PrivateAttr(default=None)

    @field_validator("catalog_type", mode="before")
    @classmethod
    def _known_catalog_type(cls, value: Any) -> Any:
        # An EnvVar is checked when the run resolves it: Dagster builds the resource again with the value.
        if not isinstance(value, dg.EnvVar) and value not in CATALOG_TYPES:
            raise ValueError(f"catalog_type {value!r} is not one of {', '.join(CATALOG_TYPES)}")
        return value

    @model_validator(mode="after")
    def _catalog_settings_complete(self) -> IcebergLakeResource:
        # With EnvVars this runs again when the run resolves them, so an empty variable fails at resource start.
        if self.catalog_type == "rest" and not self.catalog_uri:
            raise ValueError("catalog_type 'rest' needs catalog_uri (the REST catalog's endpoint)")
        if not self.allow_local_defaults:
            if not self.warehouse:
                raise ValueError("warehouse is empty and the local default warehouse is not allowed here")
            if self.catalog_type == "sql" and not self.catalog_uri:
                raise ValueError("catalog_type 'sql' needs catalog_uri: the local SQLite catalog is not allowed here")
        return self

    # -- catalog -------------------------------------------------------------------------------------------------

    def warehouse_uri(self) -> str:
        if self.warehouse:
            return self.warehouse.rstrip("/")
        return (data_dir(self.data_dir) / "warehouse").as_uri()

    def catalog_config(self) -> dict[str, str]:
        config: dict[str, str] = {"type": self.catalog_type, "warehouse": self.warehouse_uri()}
        if self.catalog_type == "sql":
            if self.catalog_uri:
                config["uri"] = self.catalog_uri
            else:
                folder = data_dir(self.data_dir)
                folder.mkdir(parents=True, exist_ok=True)
                config["uri"] = f"sqlite:///{folder / 'catalog.db'}"
            config.setdefault("init_catalog_tables", "true")
        elif self.catalog_uri:
            config["uri"] = self.catalog_uri
        # client.region serves both the Glue client and the S3 file IO. Without a region pyiceberg asks S3 where the
        # bucket is, which needs real AWS.
        if self.region:
            config["client.region"] = self.region
        if self.s3_endpoint:
            config["s3.endpoint"] = self.s3_endpoint
        if self.glue_endpoint:
            config["glue.endpoint"] = self.glue_endpoint
        config.update(self.catalog_properties)
        return config

    def catalog(self) -> Catalog:
        if self._catalog is None:
            config = self.catalog_config()
            if config["warehouse"].startswith("file://"):
                # The default warehouse is a local folder that may not exist yet on a new machine.
                Path(urlparse(config["warehouse"]).path).mkdir(parents=True, exist_ok=True)
            self._catalog = load_catalog(self.catalog_name, **config)
        return self._catalog

    def table(self, table: LakeTable) -> Table:
        """The Iceberg table for a declaration: created on first use, evolved if the declaration changed."""
        return ensure_table(self.catalog(), table)

    def load(self, table: LakeTable) -> Table:
        """The table as it is in the catalog now, without creating or evolving it."""
        return self.catalog().load_table(table.identifier)

    # -- writes --------------------------------------------------------------------------------------------------

    def run_staging_uri(self, table: LakeTable, run_id: str) -> str:
        """Where one run stages files for a table, inside the table's data folder.

        Committed files stay where they were staged (add_files references them in place); files of a run that
        died before its commit stay unreferenced in its run's folder, where maintenance finds and removes them.
        """
        return f"{self.load(table).location().rstrip('/')}/data/_staging/{run_id}"

    def staging_uri(self, table: LakeTable, run_id: str, write_id: str) -> str:
        return f"{self.run_staging_uri(table, run_id)}/{write_id}"

    def stage_spark(
        self,
        spark: SparkSession,
        table: LakeTable,
        df: DataFrame,
        *,
        partition_keys: Sequence[str] | None,
        lineage: Lineage,
        observe: Sequence[Column] = (),
    ) -> tuple[str, spark_io.StagedFiles]:
        """First half of a Spark write: executors write Parquet into staging. The table is not touched.

        ``observe``: named aggregates computed over the rows as they are written (``StagedFiles.observed``)."""
        self.table(table)  # create or evolve before staging, so a bad declaration fails before any Spark work
        write_id = uuid.uuid4().hex
        uri = self.staging_uri(table, lineage.run_id, write_id)
        staged = spark_io.stage(spark, df, table, uri, partition_keys, observe)
        return write_id, staged

    def commit_staged(
        self,
        table: LakeTable,
        write_id: str,
        staged: spark_io.StagedFiles,
        *,
        partition_keys: Sequence[str] | None,
        lineage: Lineage,
        branch: str = MAIN_BRANCH,
    ) -> WriteResult:
        """Second half of a Spark write: one transaction replaces the partitions with the staged files."""
        files = self.check_staged(table, staged, partition_keys=partition_keys)
        return self.commit_files(table, write_id, files, partition_keys=partition_keys, lineage=lineage, branch=branch)

    def check_staged(
        self, table: LakeTable, staged: spark_io.StagedFiles, *, partition_keys: Sequence[str] | None
    ) -> tuple[str, ...]:
        """The staged files to commit, checked from their footers (NOT NULL columns, partition values)."""
        return spark_io.check_staged_files(self.load(table).io, table, staged.files, partition_keys)

    def read_staged(self, spark: SparkSession, table: LakeTable, files: Sequence[str]) -> DataFrame:
        """Checked staged files as the table will hold them once committed: add_files references these very files,
        so auditing them is auditing the commit, before anything is committed."""
        return spark_io.read_files(spark, arrow_schema_of(self.load(table)), files)

    def commit_files(
        self,
        table: LakeTable,
        write_id: str,
        files: Sequence[str],
        *,
        partition_keys: Sequence[str] | None,
        lineage: Lineage,
        branch: str = MAIN_BRANCH,
    ) -> WriteResult:
        """One transaction replaces the partitions with checked staged files (``check_staged``)."""
        return commit_replace(
            lambda: self.load(table),
            table,
            partition_keys=partition_keys,
            lineage=lineage,
            write_id=write_id,
            data_files=files,
            branch=branch,
            attempts=self.commit_attempts,
        )

    def write_spark(
        self,
        spark: SparkSession,
        table: LakeTable,
        df: DataFrame,
        *,
        partition_keys: Sequence[str] | None,
        lineage: Lineage,
        branch: str = MAIN_BRANCH,
    ) -> WriteResult:
        """Replace the given partitions (the whole table if unpartitioned) with the DataFrame's rows."""
        write_id, staged = self.stage_spark(spark, table, df, partition_keys=partition_keys, lineage=lineage)
        pause_point("staged", table.identifier)  # test-only: inert unless a test arms it
        return self.commit_staged(
            table, write_id, staged, partition_keys=partition_keys, lineage=lineage, branch=branch
        )

    def write_arrow(
        self,
        table: LakeTable,
        data: pa.Table,
        *,
        partition_keys: Sequence[str] | None,
        lineage: Lineage,
        branch: str = MAIN_BRANCH,
    ) -> WriteResult:
        """Replace partitions with an in-memory Arrow table: for small assets, same semantics as write_spark."""
        iceberg_table = self.table(table)
        conformed = conform_arrow(data, table, arrow_target=iceberg_table.schema().as_arrow())
        if table.partition_column is not None:
            present = {d.isoformat() for d in pc.unique(conformed[table.partition_column]).to_pylist() if d}
            if conformed[table.partition_column].null_count:
                present.add("<null>")
            unexpected = sorted(present - set(partition_keys or ()))
            if unexpected:
                raise DataContractError(
                    f"{table.identifier}: rows with {table.partition_column} in {unexpected[:10]} are outside the "
                    f"partitions being written {sorted(partition_keys or ())[:10]}; nothing was committed"
                )
        return commit_replace(
            lambda: self.load(table),
            table,
            partition_keys=partition_keys,
            lineage=lineage,
            write_id=uuid.uuid4().hex,
            arrow_data=conformed,
            branch=branch,
            attempts=self.commit_attempts,
        )

    # -- write-audit-publish -------------------------------------------------------------------------------------

    def create_audit_branch(self, table: LakeTable, lineage: Lineage) -> str:
        """A branch from main's head for one audited write; writes go there until the audit passes."""
        iceberg_table = self.table(table)
        branch = f"audit-{lineage.run_id}-{uuid.uuid4().hex[:8]}"
        head = iceberg_table.current_snapshot()
        if head is None:
            # Iceberg allows branches only on a table with a snapshot: give a new table an empty one.
            with iceberg_table.transaction() as tx:
                tx.update_snapshot(snapshot_properties=lineage.summary("create")).fast_append().commit()
            iceberg_table = self.load(table)
            head = iceberg_table.current_snapshot()
            assert head is not None
        iceberg_table.manage_snapshots().create_branch(snapshot_id=head.snapshot_id, branch_name=branch).commit()
        return branch

    def publish(
        self, table: LakeTable, branch: str, *, partition_keys: Sequence[str] | None, lineage: Lineage
    ) -> WriteResult:
        """Make the audited partitions of a branch the partitions of main, and drop the branch.

        The branch's data files for those partitions are re-applied to main in one transaction (delete the
        partitions, append the same files). pyiceberg 0.12's set_current_snapshot would instead move main to the
        branch head and silently drop whatever reached main after the branch was made.
        """
        iceberg_table = self.load(table)
        head = iceberg_table.snapshot_by_name(branch)
        files: list[DataFile] = []
        if head is not None:
            scan = iceberg_table.scan(row_filter=partition_filter(table, partition_keys), snapshot_id=head.snapshot_id)
            files = [task.file for task in scan.plan_files()]
        result = commit_replace(
            lambda: self.load(table),
            table,
            partition_keys=partition_keys,
            lineage=lineage,
            write_id=uuid.uuid4().hex,
            existing_files=files,
            attempts=self.commit_attempts,
        )
        published = self.load(table)
        if published.snapshot_by_name(branch) is not None:
            published.manage_snapshots().remove_branch(branch).commit()
        return result

    # -- reads ---------------------------------------------------------------------------------------------------

    def read_spark(
        self,
        spark: SparkSession,
        table: LakeTable,
        partitions: PartitionSelection = None,
        *,
        snapshot_id: int | None = None,
        ref: str | None = None,
    ) -> DataFrame:
        """Partitions (keys, a key range, or all) as a Spark DataFrame, as of a snapshot or branch if given."""
        iceberg_table = self.load(table)
        return spark_io.read(
            spark,
            iceberg_table,
            table,
            partitions=partitions,
            snapshot_id=_resolve_snapshot(iceberg_table, snapshot_id, ref),
        )

    def has_rows(self, table: LakeTable, partitions: PartitionSelection = None) -> bool:
        """Whether main holds any data file in the partitions (metadata only: no data file is read)."""
        try:
            iceberg_table = self.load(table)
        except NoSuchTableError:
            return False
        if iceberg_table.current_snapshot() is None:
            return False
        return any(True for _ in iceberg_table.scan(row_filter=iceberg_filter(table, partitions)).plan_files())

    def read_arrow(
        self,
        table: LakeTable,
        partitions: PartitionSelection = None,
        *,
        snapshot_id: int | None = None,
        ref: str | None = None,
    ) -> pa.Table:
        """Partitions (keys, a key range, or all) as an Arrow table, as of a snapshot or branch if given."""
        row_filter = iceberg_filter(table, partitions)
        iceberg_table = self.load(table)
        snapshot = _resolve_snapshot(iceberg_table, snapshot_id, ref)
        return iceberg_table.scan(row_filter=row_filter, snapshot_id=snapshot).to_arrow()


def _resolve_snapshot(iceberg_table: Table, snapshot_id: int | None, ref: str | None) -> int | None:
    if ref is None:
        return snapshot_id
    if snapshot_id is not None:
        raise ValueError("name a snapshot id or a ref, not both")
    snapshot = iceberg_table.snapshot_by_name(ref)
    if snapshot is None:
        raise ValueError(f"{iceberg_table.name()} has no branch or tag {ref!r}")
    return snapshot.snapshot_id


def conform_arrow(data: pa.Table, table: LakeTable, arrow_target: pa.Schema | None = None) -> pa.Table:
    """Select and cast an Arrow table to the declaration; a missing column or a failed cast names the column."""
    missing = [n for n in table.schema.names if n not in data.column_names]
    extra = sorted(set(data.column_names) - set(table.schema.names))
    if missing or extra:
        raise DataContractError(
            f"{table.identifier}: Arrow table does not match the table declaration"
            + (f"; missing columns {missing}" if missing else "")
            + (f"; undeclared columns {extra}" if extra else "")
        )
    columns = []
    for field in table.schema:
        column = data[field.name]
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataContractError(
                f"{table.identifier}: column {field.name!r} of type {column.type} cannot be cast to {field.type}: {exc}"
            ) from exc
        if not field.nullable and column.null_count:
            raise DataContractError(f"{table.identifier}: column {field.name!r} is required but has nulls")
    conformed = pa.Table.from_arrays(columns, schema=pa.schema([f.with_nullable(True) for f in table.schema]))
    if arrow_target is not None:
        # The table may hold columns the declaration no longer names: write them as nulls.
        for target_field in arrow_target:
            if target_field.name not in conformed.column_names:
                conformed = conformed.append_column(
                    pa.field(target_field.name, target_field.type, True),
                    pa.nulls(conformed.num_rows, target_field.type),
                )
    return conformed
